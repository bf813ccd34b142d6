"""lth's benchmarks (not part of the installed package): run them from a checkout with `python scripts/bench.py`."""
