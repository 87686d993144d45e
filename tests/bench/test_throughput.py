"""`bench.throughput.CpuMeter`: the CPU a server's processes spent while its metered point ran, summed over rounds."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.throughput import CPU_LOAD, CpuMeter


def test_a_busy_process_counts_as_its_role_only_while_its_point_runs():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter = CpuMeter(busy.pid, own_role="model replica")
        other = ("server", "npy", "1 clients")
        points = meter.around({("server", "npy", CPU_LOAD): lambda: (time.sleep(0.4), (1000.0, [0.1]))[1],
                               other: lambda: (time.sleep(0.4), (5.0, []))[1]}, "server", "npy")
        assert points[other]() == (5.0, [])
        assert meter.elapsed == 0  # only the CPU_LOAD point is metered
        for _ in range(2):  # two rounds
            assert points[("server", "npy", CPU_LOAD)]() == (1000.0, [0.1])
    finally:
        busy.kill()
        busy.wait()
    row = meter.row("server")
    assert 0.8 <= meter.elapsed < 2.0 and abs(row["frames/s"] - 1000.0) < 1e-6
    assert row["cores: model replica"] > 0.2  # a spinning process, on however busy a machine
    assert row["cores: proxy"] == 0 and row["cores: Ray, the rest"] == 0
    assert abs(row["cores per 1,000 frames/s"] - row["cores: all"]) < 1e-9
    assert meter.around({}, "server", "mp4") == {}
