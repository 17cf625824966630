"""``headroom test-rules``: promtool's rule unit tests, run through Headroom's rule engine.

Register it with ``cli.add_command(test_rules)`` (``from pipelines.test_rules_cli
import test_rules``). The output follows
``promtool test rules``: ``Unit Testing:  FILE``, then ``  SUCCESS`` or
``  FAILED:`` and each failure with what was expected and what came out. The
exit code is 0 only if every file passes, 1 otherwise.
"""

from __future__ import annotations

import traceback

import click
from rich.console import Console

from detector.rule_tests import Failure, FileResult, run_test_file


def _print_result(out: Console, err: Console, result: FileResult, verbose: bool) -> None:
    for warning in result.warnings:
        err.print(f"  WARNING: {warning}", style="yellow")
    if verbose:
        for note in result.notes:
            out.print(f"  note: {note}", style="dim")
    if result.ok:
        out.print("  SUCCESS", style="green")
    else:
        out.print("  FAILED:", style="bold red")
        for failure in result.failures:
            out.print(failure.message)
            out.print()
    out.print()


@click.command("test-rules")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-v", "--verbose", is_flag=True, help="Also say how the evaluation was aligned with promtool's.")
def rules_test_command(files: tuple[str, ...], verbose: bool) -> None:
    """Run rule unit-test files in promtool's format ("promtool test rules") through Headroom.

    Each FILE names its rule files (relative to itself), input series and the
    alerts and expression results expected at given times. Rule files Headroom
    cannot load, or cannot evaluate exactly as Prometheus 2.x does, fail the test.
    """
    out = Console(highlight=False, soft_wrap=True, markup=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    failed = False
    for path in files:
        out.print(f"Unit Testing:  {path}")
        try:
            result = run_test_file(path)
        except Exception:  # a bug in Headroom: still report the other files
            result = FileResult(path)
            result.failures.append(Failure("internal", "Headroom failed while running this file:\n" + traceback.format_exc()))
        _print_result(out, err, result, verbose)
        failed |= not result.ok
    click.get_current_context().exit(1 if failed else 0)


def __getattr__(name: str) -> object:
    # ``test_rules`` is served from here rather than defined at module level: this
    # module's name matches pytest's test_*.py, and pytest would try to collect a
    # module-level ``test_rules`` as a test (and warn that it is not a function).
    if name == "test_rules":
        return rules_test_command
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
