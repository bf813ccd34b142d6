"""Benchmark lth: step overhead, pruning, memory, start-up (`python scripts/bench.py --help`)."""

import sys

from lth.bench import main

if __name__ == "__main__":
    sys.exit(main())
