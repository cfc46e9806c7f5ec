"""Benchmarks of the gateway against a bare baseline measured in the same run.

``python -m benchmarks.fanout --help``; see ``benchmarks/README.md`` for how to read it.
"""
