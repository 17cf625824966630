"""Headroom benchmarks: ``python -m bench.run [ingest|engine|pipeline|latency|all]``. See bench/README.md."""
