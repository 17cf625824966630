"""A rule group: rules evaluated in order, at one interval, on event time."""

from __future__ import annotations

from dataclasses import dataclass

from detector.rules.alerting import AlertingRule
from detector.rules.recording import RecordingRule

Rule = AlertingRule | RecordingRule


@dataclass(frozen=True, eq=False)
class RuleGroup:
    """Compiled and immutable; the per-partition state lives in the engine."""

    name: str
    source: str
    interval_ms: int
    rules: tuple[Rule, ...]
    limit: int = 0

    def reach_ms(self) -> int:
        """How far back before an evaluation any rule reads, beyond the lookback."""
        return max((rule.expr.reach_ms() for rule in self.rules), default=0)
