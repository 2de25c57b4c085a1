"""Benchmarks: schedd against APScheduler 3.11 and this machine's own floors (docs/benchmarks.md).

``python -m bench [--quick] [--json FILE]``. Not a test and not run in CI; the smoke test runs
``--quick`` at a tiny ``--scale`` so the harness keeps working.
"""
