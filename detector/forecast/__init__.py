"""Saturation forecasts: when will a bounded resource run out, and an early warning before it does.

* :mod:`detector.forecast.spec`: which series have a bound (a constant or a paired
  series) and in which direction; the runbook's patterns recognised by default;
* :mod:`detector.forecast.trend`: a discounted linear-trend forecaster per series
  (``learn_one``/``forecast``/``time_to_bound``) and its columnar batch form;
* :mod:`detector.forecast.warning`: the early-warning state machine with hysteresis,
  and the alert's words;
* :mod:`detector.forecast.engine`: all three over a stream of sample batches.
"""

from detector.forecast.engine import ALERT_NAME, EarlyWarning, Forecast, ForecastEngine
from detector.forecast.spec import (
    DEFAULT_SPECS,
    BoundSpec,
    ForecastConfig,
    ForecastSettings,
    ForecastSpecError,
    recognise,
)
from detector.forecast.trend import TrendBank, TrendForecaster
from detector.forecast.warning import WarningBank, humanize, warning_text

__all__ = [
    "ALERT_NAME",
    "DEFAULT_SPECS",
    "BoundSpec",
    "EarlyWarning",
    "Forecast",
    "ForecastConfig",
    "ForecastEngine",
    "ForecastSettings",
    "ForecastSpecError",
    "TrendBank",
    "TrendForecaster",
    "WarningBank",
    "humanize",
    "recognise",
    "warning_text",
]
