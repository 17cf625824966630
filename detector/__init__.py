"""Headroom's functional core: samples, remote-write decoding, rules, alerts.

Nothing here imports faust or aiokafka; time and I/O are passed in, so every
piece can be driven by a test, a replay or a benchmark exactly as the Faust
agents drive it.
"""
