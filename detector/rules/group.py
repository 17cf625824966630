"""A rule group: rules evaluated in order, at one interval, on event time."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

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
    # How long after its time an evaluation waits for the watermark; None: as far
    # as its rules read ahead (a negative offset), see evaluation_delay_ms.
    delay_ms: int | None = None

    def reach_ms(self) -> int:
        """How far back before an evaluation any rule reads, beyond the lookback."""
        return max(0, max((rule.expr.reach_ms() for rule in self.rules), default=0))

    @cached_property
    def evaluation_delay_ms(self) -> int:
        """How far past an evaluation time the watermark must be before the group is evaluated.

        A negative offset (``x offset -5m``) reads samples after the evaluation
        time: the group waits until the stream has them, so it sees what a
        query run later would. ``headroom test-rules`` sets 0, as promtool
        evaluates each time with the samples up to it only.
        """
        if self.delay_ms is not None:
            return self.delay_ms
        return max((rule.expr.lead_ms() for rule in self.rules), default=0)
