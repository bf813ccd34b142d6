"""In-memory LightningDataModules: mnist1d, digits (offline) and mnist, fashion_mnist, cifar10 (torchvision files)."""

from lth.data import digits, mnist1d, vision  # noqa: F401  (fill the registry)
from lth.data.base import DATASETS, TensorDataModule, build_datamodule
from lth.data.memory import TensorBatches

__all__ = ["DATASETS", "TensorBatches", "TensorDataModule", "build_datamodule"]
