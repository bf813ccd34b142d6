"""In-memory, seeded, resumable batch iteration over tensors (a DataLoader replacement for small datasets)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

# `transform(xb, generator)`; one marked `shardable = True` also takes `offset=` and `total=`: `xb` is then rows
# [offset, offset + len(xb)) of a batch of `total` and must equal that part of the whole batch's transform
BatchTransform = Callable[..., Tensor]
ON_DEVICE = ("auto", True, False)
DEVICE_SHARE = 0.5  # `on_device="auto"` moves a dataset when it takes at most this share of the device's free memory

PERMUTATION_STREAM = 0
TRANSFORM_STREAM = 1
SPLIT_STREAM = 2
_SENTINEL = 0x5EED  # last entropy word is never 0: SeedSequence treats [a] and [a, 0] alike


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator whose seed is a pure function of the non-negative integers `keys`."""
    words = np.random.SeedSequence([*(int(k) for k in keys), _SENTINEL]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))


def check_on_device(value: object) -> bool | str:
    """`True`, `False` or `"auto"` (also accepted as the strings "true"/"false", any case)."""
    if isinstance(value, str) and value.lower() in ("true", "false", "auto"):
        value = {"true": True, "false": False, "auto": "auto"}[value.lower()]
    if not any(value is c or value == c and type(value) is type(c) for c in ON_DEVICE):
        raise ValueError(f"on_device must be true, false or auto, got {value!r}")
    return value  # type: ignore[return-value]


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether `nbytes` take at most DEVICE_SHARE of `device`'s free memory (devices without a query: yes)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= DEVICE_SHARE * free
    return True


def place(tensors: tuple[Tensor, ...], device: torch.device | str, on_device: bool | str = "auto") -> tuple[Tensor, ...]:
    """`tensors` where batches for `device` are best gathered: on `device` itself (`on_device` true, or "auto" and
    they fit), else on the host — page-locked when CUDA is available, so batches copy to the device asynchronously."""
    device = torch.device(device)
    if all(t.device == device for t in tensors):
        return tensors
    on_device = check_on_device(on_device)
    if on_device is True or (on_device == "auto" and fits_on_device(sum(t.nbytes for t in tensors), device)):
        return tuple(t.to(device) for t in tensors)
    host = tuple(t.cpu() for t in tensors)
    if torch.cuda.is_available():
        host = tuple(t if t.is_pinned() else t.pin_memory() for t in host)
    return host


def gather(t: Tensor, idx: Tensor, device: torch.device) -> Tensor:
    """`t[idx]` on `device`: indexed where `t` lives, through a page-locked buffer when `t` is pinned on the host."""
    if t.device == device:
        return t[idx.to(device)]
    if t.is_pinned():
        out = torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
        return torch.index_select(t, 0, idx, out=out).to(device, non_blocking=True)
    return t[idx].to(device, non_blocking=True)  # from pageable memory: staged at once, no device sync


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
    before slicing, so augmentation is as in one process; a `shardable` transform (e.g. `random_crop_flip`) draws
    the whole batch's random numbers but transforms only the rank's slice, with the same result. The rank comes from
    `replica` if set, else from the initialised torch.distributed process group (none: rank 0 of 1). Positions count
    global batches, so a checkpoint resumes under any number of ranks.

    Extras (`extra`, e.g. a teacher's cached outputs, `lth.distill`): a tensor with one row per example; when set,
    batches are `(x[idx], y[idx], extra[idx])`, gathered with the same indices (on `extra`'s device or moved to the
    batches' device), so they consume no random numbers and change nothing else.

    Device (`device`, or `to_device()` later, e.g. by `lth.lit.TicketModule` when a Trainer starts): batches are
    yielded on that device, indexed and transformed there. The tensors themselves are moved there once (`on_device`
    true, or "auto" and they fit; see `place`) or stay on the host, page-locked under CUDA; `placer(device)`, if
    given, supplies the placed `(x, y)` instead (a data module sharing one copy between its loaders). Permutations
    and random numbers are always drawn on the CPU, so the batches are the same on every device.
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
        device: torch.device | str | None = None,
        on_device: bool | str = "auto",
        placer: Callable[[torch.device], tuple[Tensor, Tensor]] | None = None,
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
        self.on_device = check_on_device(on_device)
        self.placer = placer
        self.device: torch.device | None = None  # None: where `x` lives
        self.extra: Tensor | None = None  # per-example extras yielded as a third element (see the class doc)
        self.replica: tuple[int, int] | None = None  # (rank, world size); None: from torch.distributed
        self._epoch = 0  # epoch in progress (or last finished)
        self._consumed = 0  # batches of `_epoch` handed out
        self._started = False  # whether any epoch has begun
        self._resume = False  # next iter() continues `_epoch` at `_consumed` (set by load_state_dict)
        self._iterations = 0  # iterators started so far: only the newest one updates the state
        if device is not None:
            self.to_device(device)

    def to_device(self, device: torch.device | str) -> TensorBatches:
        """Yield batches on `device` from now on (moving or pinning the tensors once, see the class doc)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self.placer is not None:
            self.x, self.y = self.placer(device)
        else:
            self.x, self.y = place((self.x, self.y), device, self.on_device)
        self.device = device
        return self

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

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        return self._batches()

    def _batches(self) -> Iterator[tuple[Tensor, ...]]:
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
        x, y, extra = self.x, self.y, self.extra
        if extra is not None and len(extra) != len(x):
            raise ValueError(f"extra has {len(extra)} rows for {len(x)} examples")
        device = x.device if self.device is None else self.device
        order = self.order(epoch) if self.shuffle or world > 1 else None
        if order is not None and x.device.type != "cpu":
            order = order.to(x.device)  # one copy per epoch; batches are sliced from it on the device
        shardable = self.transform is None or getattr(self.transform, "shardable", False)
        bs = self.batch_size
        for i in range(start, len(self)):
            total = part = 0
            eb = None
            if order is None:  # contiguous views, no copy
                xb, yb = x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]
                if x.device != device:
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                if extra is not None:
                    eb = extra[i * bs : (i + 1) * bs].to(device, non_blocking=True)
            else:
                idx = order[i * bs : (i + 1) * bs]
                if world > 1 and len(idx) % world:
                    idx = torch.cat([idx, order[: world - len(idx) % world]])
                total, part = len(idx), len(idx) // world
                if world > 1 and shardable:  # gather (and transform) only this rank's slice
                    idx = idx[rank * part : (rank + 1) * part]
                xb, yb = gather(x, idx, device), gather(y, idx, device)
                if extra is not None:
                    eb = gather(extra, idx, device)
            if self.transform is not None:
                generator = seeded_generator(self.seed, TRANSFORM_STREAM, epoch, i)
                if world > 1 and shardable:
                    xb = self.transform(xb, generator, offset=rank * part, total=total)
                else:
                    xb = self.transform(xb, generator)
            if world > 1 and not shardable:
                xb, yb = xb[rank * part : (rank + 1) * part], yb[rank * part : (rank + 1) * part]
                if eb is not None:
                    eb = eb[rank * part : (rank + 1) * part]
            if token == self._iterations:
                self._consumed = i + 1
            yield (xb, yb) if eb is None else (xb, yb, eb)

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
