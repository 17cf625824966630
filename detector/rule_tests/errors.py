"""The error of a rule test file that promtool would not read either."""

from __future__ import annotations

from detector.errors import HeadroomError


class UnitTestFormatError(HeadroomError, ValueError):
    """A test file, series or label set that promtool would not read either."""
