"""Every stage folder's name, spelled in one place.

A stage folder is named from its configuration, never the other way round: nothing parses a
parameter back out of a folder's name (a plan keeps its jobs, and :mod:`fndkit.results` reads the
values from each job). Plan builders pass ``out_name=`` one of these names.

- The notebooks' own names (what a papermill call with no ``out_name`` fills): ``student_<loss>``
  (``-alpha<α>`` for FND at a non-default α, ``-per_pair``), ``contrastive`` (``-<view1>-<view2>``,
  ``-lam<λ>``, …), a baseline's model name (``-<loss>``, ``-hard``).
- Plans: :func:`variant` (a method's stage with the settings an experiment varies),
  :func:`trial` (a search trial), :func:`sized` (a student of another size), :func:`seed_folder`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import PAPER_DEFAULTS
from ..distillation import name_suffix
from ..models.registry import MODELS

DATA = "data"
AUTOENCODER = "autoencoder"
PRETRAIN = "pretrain"
TEACHER = "teacher"
COLD_START = "cold_start"
EXPLORER = "explorer"
FALSE_NEGATIVES = "false_negatives"
# the folders a stage of another kind may never take as its out_name: a run's own inputs
RESERVED = (DATA, AUTOENCODER, PRETRAIN, TEACHER, COLD_START, EXPLORER, FALSE_NEGATIVES, "notebooks",
            "decoded_images")
KIND_FOLDERS = {"data": DATA, "autoencoder": AUTOENCODER, "pretrain": PRETRAIN, "teacher": TEACHER,
                "cold_start": COLD_START, "explorer": EXPLORER, "false_negatives": FALSE_NEGATIVES}

# objectives whose weights depend on α (fnd-sign keeps only the sign of d, which α cannot change)
ALPHA_LOSSES = ("fnd", "fnd-magnitude", "kd-fnd")


def value_text(value: Any) -> str:
    """A parameter value as it appears in a name: ``1.25``, ``2``, ``erase+replace``."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace(",", "+").replace(" ", "")


def default_student_name(loss: str, alpha: float, default_alpha: float = PAPER_DEFAULTS["fixed"]["alpha"]) -> str:
    """``student_<loss>`` for the paper's defaults; a non-default α appended for FND."""
    name = f"student_{loss}"
    if loss in ALPHA_LOSSES and alpha != default_alpha:
        name += f"-alpha{alpha:g}"
    return name


def default_contrastive_name(pair: tuple[str, str], lam: float, alpha: float, loss: str = "fnd",
                             defaults: dict = PAPER_DEFAULTS["fixed"]) -> str:
    """``contrastive`` for the paper's defaults (its pair, λ = 0.2, its α, FND)."""
    name = "contrastive"
    if ",".join(pair) != defaults["augmentations"]:
        name += "-" + "-".join(pair)
    if lam != 0.2:
        name += f"-lam{lam:g}"
    if loss != "fnd":
        name += f"-{loss}"
    elif alpha != defaults["alpha"]:
        name += f"-alpha{alpha:g}"
    return name


def student_name(cfg, default_alpha: float) -> str:
    """The 03_student folder name for ``cfg``: a distillation baseline's non-default fields
    (:func:`fndkit.distillation.name_suffix`), ``-per_pair`` when each pair draws its own negatives."""
    name = default_student_name(cfg.loss, cfg.alpha, default_alpha) + name_suffix(cfg)
    return name + ("-per_pair" if cfg.negatives == "per_pair" else "")


def contrastive_name(cfg, defaults: dict) -> str:
    """The 04_contrastive folder name for ``cfg`` with the dataset's paper defaults."""
    return default_contrastive_name(tuple(cfg.augmentations.split(",")), cfg.lam, cfg.alpha, cfg.loss, defaults)


def baseline_name(cfg, own_objective: str) -> str:
    """The 07_baselines folder name: the model's name, ``-<loss>`` when it trains with another
    objective than its own, ``-hard`` for the hard protocol (hard_fraction 0.5; another fraction
    is spelled out)."""
    name = cfg.model
    if cfg.loss != own_objective:
        name += f"-{cfg.loss}"
    if cfg.hard_fraction > 0:
        name += "-hard" if cfg.hard_fraction == 0.5 else f"-hard{cfg.hard_fraction:g}"
    return name


def method_stage(method: str, hard: bool = False) -> str:
    """The stage of a method's table row: ``contrastive`` for FND-CL, a baseline's model name, else
    ``student_<loss>``; ``-hard`` for the hard-negative protocol."""
    if method == "fnd-cl":
        base = "contrastive"
    elif method in MODELS and method != "recommender":
        base = method
    else:
        base = f"student_{method}"
    return base + ("-hard" if hard else "")


def variant(stage: str, **varied) -> str:
    """``stage`` with the settings an experiment varies: ``student_fnd-alpha2``,
    ``contrastive-erase-erase``, ``student_fnd-backbonecnn-small``."""
    parts = [stage]
    for name, value in varied.items():
        if name == "augmentations":
            parts.append(str(value).replace(",", "-"))
        else:
            parts.append(f"{name}{value_text(value)}")
    return "-".join(parts)


def trial(method: str, point: dict) -> str:
    """A search trial's folder: ``search-<method>-<name><value>…`` (a pair's comma as ``+``)."""
    return "-".join(["search", method, *(f"{k}{value_text(v)}" for k, v in point.items())])


def sized(size: str, method: str) -> str:
    """A student of size ``size`` (XS, S, M, T) trained with ``method``: ``XS_fnd``."""
    return f"{size}_{method}"


def replicate(stage: str, seed: int) -> str:
    """A stage trained once per seed in one shared run folder: ``<stage>-seed<k>``."""
    return f"{stage}-seed{seed}"


def replicated_from(stage: str, seed) -> str:
    """What :func:`replicate` made ``stage`` from, given the seed it was made with (``student_fnd``
    for ``student_fnd-seed3`` and seed 3); any other stage as it is. The seed is known, not read
    from the name."""
    try:
        suffix = replicate("", int(seed))
    except (TypeError, ValueError):  # a row without a seed
        return stage
    return stage[:-len(suffix)] if stage.endswith(suffix) and len(stage) > len(suffix) else stage


def seed_folder(root: str | os.PathLike, seed: int) -> Path:
    """The run folder of one seed of a plan: ``<root>/seed<k>``."""
    return Path(root) / f"seed{seed}"


def breadth_folder(root: str | os.PathLike, breadth: float) -> Path:
    """The false-negative lab's folder of one taste breadth: ``<root>/breadth<b>``."""
    return Path(root) / f"breadth{breadth:g}"


def stage_of(params) -> str:
    """The stage folder a stage's ``Params`` fills: its ``out_name`` when set; a training stage's
    planned name (from its configuration, once its run folder holds data); else its kind's folder."""
    out = getattr(params, "out_name", None)
    if out:
        return str(out)
    if params.kind in KIND_FOLDERS:
        return KIND_FOLDERS[params.kind]
    try:
        return params.plan().stage
    except Exception:  # no data yet, or a bad parameter (reported when the job runs)
        return params.kind
