"""Models by name: register a model class once and the notebooks, runner and report find it.

    @register_model("mean-pool")
    class MeanPool(OutfitModel): ...

``build_model(kind, n_users=…, dim=…, backbone=…)`` builds one; :func:`model_from_config` rebuilds
one from the plain dict a checkpoint carries (its ``"kind"``; checkpoints written before the
registry existed are the recommender); :func:`load_model` rebuilds one from a checkpoint file.
"""

from __future__ import annotations

import os
from typing import Callable

from ..artifacts import load_checkpoint
from .contract import OutfitModel

MODELS: dict[str, type[OutfitModel]] = {}
DEFAULT_KIND = "recommender"


def register_model(kind: str) -> Callable[[type[OutfitModel]], type[OutfitModel]]:
    """Class decorator: make ``cls`` buildable by name (``kind``)."""

    def wrap(cls: type[OutfitModel]) -> type[OutfitModel]:
        if not (isinstance(cls, type) and issubclass(cls, OutfitModel)):
            raise TypeError(f"{cls!r} must subclass fndkit.models.contract.OutfitModel")
        if kind in MODELS and MODELS[kind] is not cls:
            raise ValueError(f"model kind {kind!r} is already registered by {MODELS[kind].__name__}")
        cls.kind = kind
        MODELS[kind] = cls
        return cls

    return wrap


def model_class(kind: str) -> type[OutfitModel]:
    if kind not in MODELS:
        raise ValueError(f"model={kind!r} is unknown; choose one of {sorted(MODELS)}")
    return MODELS[kind]


def build_model(kind: str = DEFAULT_KIND, **kwargs) -> OutfitModel:
    """A new model of ``kind``. Every model takes the common arguments ``n_users``, ``dim``,
    ``backbone``, ``heads`` and ``weights`` (ignoring those it has no use for) plus its own."""
    return model_class(kind).build(**kwargs)


def model_from_config(cfg: dict) -> OutfitModel:
    """Rebuild an untrained model from its ``config()`` dict."""
    return model_class(cfg.get("kind", DEFAULT_KIND)).from_config(cfg)


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[OutfitModel, dict]:
    """Rebuild a model from a checkpoint alone; returns (model in eval mode, checkpoint payload)."""
    payload = load_checkpoint(path, map_location=device)
    config = payload["config"].get("model")
    try:
        model = model_from_config(config)
    except (ValueError, TypeError, AttributeError) as exc:  # e.g. the autoencoder's checkpoint
        raise ValueError(f"{path} is not the checkpoint of a model fndkit can rebuild as a recommender "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); point at a "
                         f"trained recommender's folder or checkpoint.pt (teacher, student_fnd, ...)") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match the model its config describes "
                         f"({payload['config']['model']}): {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), payload
