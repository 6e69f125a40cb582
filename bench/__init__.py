"""Serving benchmarks and the reference designs they compare against (not shipped).

Run from the repository root with the package on the path, e.g. ``python -m bench.run``; see
docs/benchmarks.md.
"""
