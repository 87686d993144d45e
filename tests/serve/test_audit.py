"""The service's live reward audit book (serve/audit.py), without Ray."""

from __future__ import annotations

from serve.audit import MAX_KEYS, AuditBook


class Gauges:
    def __init__(self):
        self.last = {}

    def set(self, model, task, auroc, false_pay_rate):
        self.last[model, task] = (auroc, false_pay_rate)


def test_the_book_audits_each_model_and_task_apart_and_sets_the_gauges():
    gauges = Gauges()
    book = AuditBook(gauges)
    book.add("m", ["a", "a", "b"], [1.0, 0.2, 0.5], [True, False, True])
    book.add("m", ["a"], [0.9], [False])  # paid less than the median success (1.0): not a false pay
    rows = {row["task"]: row for row in book.snapshot()}
    assert rows["a"] == {"model": "m", "task": "a", "episodes": 3, "successes": 1, "reward_auroc": 1.0,
                         "false_pay_rate": 0.0}
    assert rows["b"]["reward_auroc"] is None  # no failure yet: nothing to rank
    assert gauges.last["m", "a"] == (1.0, 0.0)


def test_the_book_keeps_at_most_max_keys_tasks():
    book = AuditBook()
    for i in range(MAX_KEYS + 10):
        book.add("m", [f"task {i}"], [0.0], [True])
    tasks = [row["task"] for row in book.snapshot()]
    assert len(tasks) == MAX_KEYS and tasks[0] == "task 10"  # the least recently reported went first
