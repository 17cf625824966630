"""Rule unit tests in promtool's format, run through Headroom's own rule engine.

``promtool test rules`` reads a YAML file of ``rule_files``, an
``evaluation_interval`` (default 1m), an optional ``group_eval_order`` and
``tests``: groups of ``input_series`` (series in selector notation, values in
the expanding notation ``a+bxn``, ``axn``, ``_``, ``_xn``, ``stale``), with
``alert_rule_test`` (the *firing* alerts expected at an ``eval_time``) and
``promql_expr_test`` (the samples an expression returns at an ``eval_time``).
This module reads the same files, the way Prometheus 2.42 reads them, and
answers the same questions with Headroom's :class:`RuleEngine` and PromQL
evaluator; nothing here runs promtool.

How the evaluation lines up with promtool's:

* promtool evaluates every rule group at every ``evaluation_interval`` from
  time 0 up to the largest ``eval_time`` of the test group, whatever the
  group's own ``interval``. Here every group gets the evaluation interval as
  its interval, the engine's first tick is time 0 (before any sample), and
  the watermark is advanced explicitly to each tick.
* promtool loads the input series lazily: before the evaluation at ``ts`` it
  adds the samples at or before ``ts``. The engine is fed the same slices.
  So an alert test at an ``eval_time`` between two ticks sees the state of
  the tick before it, and a ``promql_expr_test`` runs after the last tick,
  over the samples (and recorded series) up to that tick only.
* alerts are compared as promtool does: the firing alerts of every rule named
  ``alertname``, labels and annotations, as sorted lists (so as multisets);
  expression results as sorted lists of (labels, value) with exact float
  equality (Prometheus 2.42 uses ``reflect.DeepEqual``: no tolerance, and a
  NaN never equals an expected NaN).
* a test group without ``interval`` has interval 0 in promtool 2.42: every
  value of a series is loaded at time 0 and the first one wins. The same
  happens here (and a warning says so).
* ``group_eval_order`` orders the groups (stably; unnamed groups count as
  position 0, as in promtool).

What Headroom cannot answer exactly fails the test group with the reason: a
rule file it cannot load (the loader's problems, by file, group and rule), an
expression it does not evaluate, a rule or expression that reads the
``ALERTS``/``ALERTS_FOR_STATE`` series (the engine does not write them),
templates using ``$externalURL`` when the test sets ``external_url`` (the
engine renders it empty), and native-histogram series notation.

The entry point is :func:`run_test_file`; ``headroom test-rules`` prints its results.

Modules: :mod:`.series` (the series and label-set notation), :mod:`detector.go_yaml`
(reading YAML as go-yaml v2's UnmarshalStrict does, shared with the rule file loader), :mod:`.files` (the
test file model and its loader), :mod:`.runner` (running a file through the
engine), :mod:`.report` (failures and promtool's wording), :mod:`.errors`.
"""

from detector.rule_tests.errors import UnitTestFormatError
from detector.rule_tests.report import Failure, FileResult, format_duration, format_float_e, format_go_time
from detector.rule_tests.runner import resolve_rule_files, run_test_file, run_test_files
from detector.rule_tests.series import STALE_NAN, is_stale_marker, parse_metric, parse_series, parse_series_values
from detector.rule_tests.files import TestFile, TestGroup, parse_test_file

__all__ = [
    "STALE_NAN",
    "Failure",
    "FileResult",
    "TestFile",
    "TestGroup",
    "UnitTestFormatError",
    "format_duration",
    "format_float_e",
    "format_go_time",
    "is_stale_marker",
    "parse_metric",
    "parse_series",
    "parse_series_values",
    "parse_test_file",
    "resolve_rule_files",
    "run_test_file",
    "run_test_files",
]
