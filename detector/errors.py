"""The one root error type, and the errors that carry an HTTP meaning.

Every error Headroom raises on purpose derives from :class:`HeadroomError`, so a
caller can catch "anything Headroom refused" in one place. Messages say what was
wrong, where, and what to do about it.
"""

from __future__ import annotations


class HeadroomError(Exception):
    """Root of every error Headroom raises on purpose."""


class InvalidRequest(HeadroomError):
    """A client sent something that will never be accepted: answer 4xx, never 5xx.

    ``status`` is the HTTP status the receiver answers with.

    >>> err = InvalidRequest(415, "Content-Encoding must be snappy, got 'gzip'")
    >>> err.status, str(err)
    (415, "Content-Encoding must be snappy, got 'gzip'")
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BatchFormatError(HeadroomError):
    """A Kafka message is not a sample batch this version can read."""


class RuleError(HeadroomError):
    """A rule file or rule expression Headroom cannot load.

    Holds every problem found, each already naming file, group, rule and field,
    so a user fixes them all in one pass.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in rule files:\n  " + "\n  ".join(self.problems)
        )
