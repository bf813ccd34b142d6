"""In-memory, seeded, resumable batch iteration over tensors (a DataLoader replacement for small datasets)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

BatchTransform = Callable[[Tensor, torch.Generator], Tensor]

PERMUTATION_STREAM = 0
TRANSFORM_STREAM = 1
SPLIT_STREAM = 2
_SENTINEL = 0x5EED  # last entropy word is never 0: SeedSequence treats [a] and [a, 0] alike


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator whose seed is a pure function of the non-negative integers `keys`."""
    words = np.random.SeedSequence([*(int(k) for k in keys), _SENTINEL]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))


class TensorBatches:
    """Batches `(x[idx], y[idx])` of one seeded permutation per epoch; stateful so a run can resume mid-epoch.

    Epoch `e` (counted by this object: the first iterator is epoch 0, each later one the next) is ordered by a
    permutation drawn from a generator seeded with `(seed, e)` only, so the order never depends on history. The
    optional `transform(xb, generator)` (e.g. augmentation) gets a generator seeded with `(seed, e, batch index)`.

    Resuming: `state_dict()` is `{"epoch", "consumed", ...}`, the epoch in progress and how many of its batches have been
    handed out. An epoch starts at the first `next()`, not at `iter()` (Lightning calls `iter()` once just to check
    the loader). Lightning's fit loop saves this state in every checkpoint (`CombinedLoader._state_dicts`, as this class
    has `state_dict`/`load_state_dict`) and, when it restarts inside an epoch, loads it before the first batch. For an
    iterable with `__len__` its fetcher pulls exactly one batch per training step (it prefetches only when the length
    is unknown), so "handed out" equals "consumed by training" at train-batch and epoch ends. After `load_state_dict`,
    the next iterator continues that epoch at that position (or starts the next epoch if it was complete); later ones
    start new epochs as usual. Lightning does not restore loader state for a checkpoint taken at an epoch end (not a
    restart inside an epoch); `TensorDataModule.state_dict`/`load_state_dict` carry the state in that case.

    Sharding (`shard=True`, for training under DDP): every rank builds the same global batches and takes its own
    contiguous slice of each — rank k of W gets items [k·b/W, (k+1)·b/W) of a batch of b — so the ranks see disjoint
    parts of the same epoch permutation, the same number of batches, and, as DDP averages equal-sized slices, the
    gradient of the whole batch: training follows the single-process run. A batch whose size is not a multiple of W
    (an epoch's short last batch) is first padded with the epoch's first items. The transform runs on the whole batch
    before slicing, so augmentation is as in one process. The rank comes from `replica` if set, else from the
    initialised torch.distributed process group (none: rank 0 of 1). Positions count global batches, so a checkpoint
    resumes under any number of ranks.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        transform: BatchTransform | None = None,
        shard: bool = False,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.transform = transform
        self.shard = shard
        self.replica: tuple[int, int] | None = None  # (rank, world size); None: from torch.distributed
        self._epoch = 0  # epoch in progress (or last finished)
        self._consumed = 0  # batches of `_epoch` handed out
        self._started = False  # whether any epoch has begun
        self._resume = False  # next iter() continues `_epoch` at `_consumed` (set by load_state_dict)
        self._iterations = 0  # iterators started so far: only the newest one updates the state

    @property
    def num_samples(self) -> int:
        """Number of samples."""
        return len(self.x)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch in progress (or last finished)."""
        return self._epoch

    def order(self, epoch: int) -> Tensor:
        """Sample order of `epoch` (identity when not shuffling)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=seeded_generator(self.seed, PERMUTATION_STREAM, epoch))

    def ranks(self) -> tuple[int, int]:
        """(rank, world size) whose slice of every batch this object yields; (0, 1) when not sharding."""
        if not self.shard:
            return 0, 1
        if self.replica is not None:
            rank, world = self.replica
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            return 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        if world > 1 and self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by the {world} ranks sharing each batch")
        return rank, world

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self._batches()

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        # runs at the first next(), not at iter(): Lightning calls iter() once just to check iterability
        if self._resume:
            epoch, start = (self._epoch, self._consumed) if self._consumed < len(self) else (self._epoch + 1, 0)
        else:
            epoch, start = (self._epoch + 1 if self._started else 0), 0
        self._resume, self._started = False, True
        self._epoch, self._consumed = epoch, start
        self._iterations += 1
        token = self._iterations
        rank, world = self.ranks()
        order = self.order(epoch) if self.shuffle or world > 1 else None
        bs = self.batch_size
        for i in range(start, len(self)):
            if order is None:  # contiguous views, no copy
                xb, yb = self.x[i * bs : (i + 1) * bs], self.y[i * bs : (i + 1) * bs]
            else:
                idx = order[i * bs : (i + 1) * bs]
                if world > 1 and len(idx) % world:
                    idx = torch.cat([idx, order[: world - len(idx) % world]])
                xb, yb = self.x[idx], self.y[idx]
            if self.transform is not None:
                xb = self.transform(xb, seeded_generator(self.seed, TRANSFORM_STREAM, epoch, i))
            if world > 1:
                part = len(xb) // world
                xb, yb = xb[rank * part : (rank + 1) * part], yb[rank * part : (rank + 1) * part]
            if token == self._iterations:
                self._consumed = i + 1
            yield xb, yb

    def state_dict(self) -> dict[str, Any]:
        """Position in the epoch sequence: `{"epoch", "consumed", "num_samples", "batch_size", "seed"}`."""
        return {
            "epoch": self._epoch,
            "consumed": self._consumed,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next `iter()` continue the saved epoch where it stopped."""
        for key in ("num_samples", "batch_size", "seed"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume TensorBatches: saved {key}={state[key]} but this one has {key}={getattr(self, key)}"
                )
        self._epoch, self._consumed = int(state["epoch"]), int(state["consumed"])
        self._started = self._resume = True
