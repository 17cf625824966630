"""Headroom's shell: the Faust app and agents, the receiver, the CLI, local services.

Everything here is I/O and wiring; the decisions are made in :mod:`detector`.
"""
