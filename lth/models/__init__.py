"""Models: the registry (`MODELS`, `build_model`), seeded re-initialisation (`reinitialize`) and the registered models."""

# Importing the model modules fills MODELS.
from lth.models import cnn1d, conv, mlp, resnet, vgg  # noqa: F401
from lth.models.base import MODELS, build_model, model_options, reinitialize
from lth.models.init import INITS, apply_init

__all__ = ["INITS", "MODELS", "apply_init", "build_model", "model_options", "reinitialize"]
