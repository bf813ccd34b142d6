"""Seeds: independent, reproducible random streams derived from the lineage seed (θ0, resets, random scores, ...)."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed derived from several parts (independent streams for θ0, resets, random scores, ...)."""
    ints = [p if isinstance(p, int) else int.from_bytes(p.encode(), "little") % (2**32) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0] & 0x7FFFFFFF)
