"""``headroom score-csv IN.csv OUT.csv [--model NAME]``: one series through the pipeline's scorer.

Register it with ``cli.add_command(score_csv)`` (``from pipelines.score_csv_cli
import score_csv``). IN.csv has a header with ``timestamp`` and ``value``
columns (NAB's layout); rows are streamed in file order through
:class:`detector.anomaly.AnomalyScorer` (the object the Faust agent calls per
Kafka message), in chunks, each row scored before it is learned. OUT.csv gets
``timestamp,value,anomaly_score``, one row per input row, scores written with
``repr`` (full float precision). Timestamps are ISO 8601 (naive means UTC) or
numbers (seconds, or milliseconds when above 1e11).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from datetime import datetime, timezone

import click
import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from detector.anomaly import DEFAULT_MODEL, MODELS, AnomalyScorer
from detector.errors import HeadroomError

CHUNK = 4096
SERIES_KEY = b"score-csv"


class CsvInputError(HeadroomError):
    """An input row score-csv cannot read."""


def parse_timestamp(text: str, where: str) -> float:
    """Seconds since the epoch from an ISO 8601 string (naive = UTC) or a number."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number / 1000.0 if number > 1e11 else number
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise CsvInputError(f"{where}: timestamp {text!r} is neither ISO 8601 nor a number") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def read_chunks(path: str, size: int = CHUNK) -> Iterator[tuple[list[str], list[str], np.ndarray, np.ndarray]]:
    """(raw timestamps, raw values, seconds, floats) per chunk of rows, in file order."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise CsvInputError(f"{path}: empty file; expected a header 'timestamp,value'") from None
        if "timestamp" not in header or "value" not in header:
            raise CsvInputError(f"{path}: header {header} lacks 'timestamp' and 'value' columns")
        ti, vi = header.index("timestamp"), header.index("value")
        raw_t: list[str] = []
        raw_v: list[str] = []
        secs: list[float] = []
        vals: list[float] = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            where = f"{path}:{line}"
            try:
                t_text, v_text = row[ti], row[vi]
            except IndexError:
                raise CsvInputError(f"{where}: expected {len(header)} columns, got {len(row)}") from None
            try:
                value = float(v_text)
            except ValueError:
                raise CsvInputError(f"{where}: value {v_text!r} is not a number") from None
            raw_t.append(t_text)
            raw_v.append(v_text)
            secs.append(parse_timestamp(t_text, where))
            vals.append(value)
            if len(raw_t) == size:
                yield raw_t, raw_v, np.asarray(secs), np.asarray(vals)
                raw_t, raw_v, secs, vals = [], [], [], []
        if raw_t:
            yield raw_t, raw_v, np.asarray(secs), np.asarray(vals)


def count_rows(path: str) -> int:
    """Data rows in a CSV file (lines after the header), counted fast for the progress bar."""
    with open(path, "rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    return max(0, lines - 1)


def score_file(
    in_path: str, out_path: str, model: str = DEFAULT_MODEL, progress: Progress | None = None, counter: bool = False
) -> int:
    """Score one CSV file into another; returns the number of rows written.

    ``counter``: the values are a counter's, scored on their per-second rate.
    """
    scorer = AnomalyScorer(model, counter=lambda key: counter)
    row = scorer.rows_for([SERIES_KEY])
    task = progress.add_task(os.path.basename(in_path), total=count_rows(in_path)) if progress else None
    written = 0
    with open(out_path, "w", newline="") as out:
        out.write("timestamp,value,anomaly_score\n")
        for raw_t, raw_v, secs, vals in read_chunks(in_path):
            scores = scorer.score(np.repeat(row, len(vals)), secs, vals)
            out.writelines(f"{t},{v},{s!r}\n" for t, v, s in zip(raw_t, raw_v, scores.tolist()))
            written += len(vals)
            if progress is not None:
                progress.update(task, completed=written)
    return written


@click.command("score-csv")
@click.argument("in_csv", type=click.Path(exists=True, dir_okay=False))
@click.argument("out_csv", type=click.Path(dir_okay=False, writable=True))
@click.option("--model", default=DEFAULT_MODEL, show_default=True, type=click.Choice(sorted(MODELS)),
              help="Anomaly model from the catalog.")
@click.option("--counter", is_flag=True, help="The values are a counter's: score their per-second rate (resets handled).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal, for long files).")
def score_csv(in_csv: str, out_csv: str, model: str, counter: bool, progress: bool | None) -> None:
    """Score IN_CSV (timestamp,value rows) into OUT_CSV (timestamp,value,anomaly_score), row for row."""
    show = progress if progress is not None else os.path.getsize(in_csv) > 1_000_000
    try:
        if show:
            with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=True) as bar:
                n = score_file(in_csv, out_csv, model, bar, counter)
        else:
            n = score_file(in_csv, out_csv, model, None, counter)
    except HeadroomError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{n} rows scored with model {model!r} -> {out_csv}", err=True)
