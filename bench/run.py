"""Entry point: ``python -m bench.run [ingest|wire_bytes|engine|pipeline|latency|scoring|state|completeness|worker_faults|stages|stages_kafka|memory_faults|receiver-faults|peers|broker_idle|worker_memory|all] [--runs N] [--quick]``.

Prints one rich table per bench: the median over the runs, min and max, the
median of the per-run ratios to the baseline measured in the same run, and
the target where there is one. ``--save PATH`` also writes the tables as
Markdown (PATH) and JSON (PATH with .json). ``--profile`` adds a cProfile
of the in-process hot paths (decoder, engine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console

from bench.common import Table, bench_context

BENCHES = ("ingest", "wire_bytes", "engine", "pipeline", "latency", "scoring", "state", "completeness", "worker_faults",
           "stages", "memory_faults", "receiver-faults")
# Run only by name, not by "all": it plays live, about 45 minutes for 3 runs of each shape
# (--quick: 1 run of one shape, about 3 minutes).
# stages_kafka: a broker and 1, 2, 4 worker processes per run; broker_idle: a broker per setting, about 10 minutes.
SLOW_BENCHES = ("peers", "stages_kafka", "broker_idle")
# Run only by name too, but with the usual number of runs: a fresh 100k-series worker per run,
# about 6 minutes with --quick.
BY_NAME = ("worker_memory",)


def _run_one(name: str, ctx) -> list[Table]:
    if name == "ingest":
        from bench import ingest

        return ingest.run(ctx)
    if name == "engine":
        from bench import engine

        return [engine.run(ctx)]
    if name == "pipeline":
        from bench import pipeline

        return [pipeline.run(ctx)]
    if name == "scoring":
        from bench import scoring

        return scoring.run(ctx)
    if name == "completeness":
        from bench import completeness

        return completeness.run(ctx)
    if name == "peers":
        from bench import peers

        return peers.run(ctx)
    if name == "state":
        from bench import state

        return [state.run(ctx)]
    if name == "worker_faults":
        from bench import worker_faults

        return [worker_faults.run(ctx)]
    if name == "stages_kafka":
        from bench import stages_kafka

        return stages_kafka.run(ctx)
    if name == "wire_bytes":
        from bench import wire_bytes

        return wire_bytes.run(ctx)
    if name == "broker_idle":
        from bench import broker_idle

        return broker_idle.run(ctx)
    if name == "stages":
        from bench import stages

        return stages.run(ctx)
    if name == "memory_faults":
        from bench import memory_faults

        return memory_faults.run(ctx)
    if name == "worker_memory":
        from bench import worker_memory

        return worker_memory.run(ctx)
    if name == "receiver-faults":
        from bench import receiver_faults

        return receiver_faults.run(ctx)
    from bench import latency

    return latency.run(ctx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", nargs="?", default="all", choices=(*BENCHES, *SLOW_BENCHES, *BY_NAME, "all"))
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="less data per run and 3 runs: 'all' in about 2 minutes")
    parser.add_argument("--profile", action="store_true", help="cProfile the hot paths (decoder, engine, one extra worker run)")
    parser.add_argument("--save", type=Path, default=None, help="also write the tables as Markdown here (+ .json)")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    if args.bench in SLOW_BENCHES and args.runs is None:
        runs = 1 if args.quick else 3
    console = Console(width=max(140, Console().width))
    command = "python -m bench.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    console.print(f"[bold]{command}[/bold]  ({runs} runs{', quick' if args.quick else ''}; "
                  f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, Python {platform.python_version()})")
    names = BENCHES if args.bench == "all" else (args.bench,)
    tables: list[Table] = []
    failures = []
    started = time.monotonic()
    with bench_context(runs, args.quick, console, args.profile) as ctx:
        for name in names:
            t = time.monotonic()
            try:
                produced = _run_one(name, ctx)
            except Exception as exc:  # report and go on with the other benches
                console.print_exception()
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            for table in produced:
                table.render(console)
            tables += produced
            ctx.log(f"{name} took {time.monotonic() - t:.0f}s")
    console.print(f"total {time.monotonic() - started:.0f}s")
    for failure in failures:
        console.print(f"[red]FAILED[/red] {failure}")
    if args.save:
        header = (f"`{command}` ({runs} runs{', quick' if args.quick else ''}), {time.strftime('%Y-%m-%d %H:%M')}, "
                  f"{os.cpu_count()} CPUs, Python {platform.python_version()}\n\n")
        args.save.write_text(header + "\n".join(t.markdown() for t in tables))
        args.save.with_suffix(".json").write_text(json.dumps(
            {"command": command, "runs": runs, "quick": args.quick, "tables": [t.to_json() for t in tables]}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
