"""Benchmarks: one script per question, each run as `python -m bench.<name>` from the repository root."""
