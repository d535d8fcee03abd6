"""Models: item backbones, the Set Transformer, the recommender and the baselines.

Importing the package registers every model with :mod:`fndkit.models.registry`.
"""

from . import recommender  # noqa: F401  (registers "recommender")
from .contract import OutfitModel
from .registry import MODELS, build_model, load_model, model_from_config, register_model

__all__ = ["MODELS", "OutfitModel", "build_model", "load_model", "model_from_config", "register_model"]
