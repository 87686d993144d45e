"""The live reward-hacking audit of the service: per (model, task), the returns it paid against the successes that
clients report with their trajectories (`successes` on /v1/score/batch), so an operator sees a policy find a
critic's blind spots while it trains (`GET /v1/audit`, the page, and Prometheus gauges)."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

from rewards.metrics import RewardAudit

MAX_KEYS = 256  # (model, task) pairs kept, least recently reported dropped first: clients cannot grow it unbounded


class AuditBook:
    """`RewardAudit`s by (model, task); `gauges` (serve.metrics.AuditGauges, inside Serve) get each new figure."""

    def __init__(self, gauges=None, window: int = 256):
        self.gauges, self.window = gauges, window
        self.audits: OrderedDict[tuple[str, str], RewardAudit] = OrderedDict()

    def add(self, model: str, tasks: Sequence[str], returns: Sequence[float], successes: Sequence[bool]) -> None:
        """One episode per (task, return, success), as a batch request scored them."""
        for task, episode_return, success in zip(tasks, returns, successes):
            key = (model, task)
            audit = self.audits.pop(key, None) or RewardAudit(self.window)
            audit.add(episode_return, success)
            self.audits[key] = audit
            while len(self.audits) > MAX_KEYS:
                self.audits.popitem(last=False)
            if self.gauges is not None:
                self.gauges.set(model, task, audit.reward_auroc, audit.false_pay_rate)

    def snapshot(self) -> list[dict]:
        """The audits as JSON rows (NaN figures, before a task has a success and a failure, as None)."""
        def figure(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 4)

        return [{"model": model, "task": task, "episodes": len(audit.returns), "successes": sum(audit.successes),
                 "reward_auroc": figure(audit.reward_auroc), "false_pay_rate": figure(audit.false_pay_rate)}
                for (model, task), audit in self.audits.items()]
