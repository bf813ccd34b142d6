"""Inference latency of weight vs neuron pruning (`python scripts/bench_structured.py --help`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's benchmarks/ (not in the wheel)

from benchmarks.structured import main

if __name__ == "__main__":
    sys.exit(main())
