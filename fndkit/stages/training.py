"""02_teacher / 03_student / 04_contrastive / 07_baselines: train one model into a stage folder."""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from ..config import PAPER_DEFAULTS, SCALE_PRESETS, ConfigError, TrainConfig
from ..evaluate import evaluate
from ..models.backbones import BACKBONES, count_parameters
from ..models.registry import MODELS
from ..objectives import NEEDS_TEACHER, OBJECTIVES, make_objective, prepare_teacher
from ..repro import resolve_device, seed_everything
from ..rundir import RunFolder, StageStatus
from ..train import Callback, build_model, fit

FLAG_KEYS = ("flagged_fraction", "flag_precision", "flag_recall", "true_fn_fraction")


def check_names(cfg: TrainConfig) -> TrainConfig:
    """The model, backbone and objective a config names exist in their registries."""
    for field, value, known in (("model", cfg.model, MODELS), ("backbone", cfg.backbone, BACKBONES),
                                ("loss", cfg.loss, OBJECTIVES)):
        if value not in known:
            raise ConfigError(f"{field}={value!r} is unknown; choose one of {sorted(known)}")
    return cfg


def paper_defaults(run: RunFolder) -> dict:
    """α and the augmentation pair the paper used for this kind of dataset (config.PAPER_DEFAULTS)."""
    variable = bool(run.data_description().get("stats", {}).get("variable_size", False))
    return PAPER_DEFAULTS["variable" if variable else "fixed"]


def train_config(run_dir: str | os.PathLike, role: str, **params) -> TrainConfig:
    """A TrainConfig from notebook parameters (``None`` = the preset), the run folder's scale
    preset and the paper's per-dataset defaults. ``role``: "teacher" or "student" (which picks the
    preset backbone and the validation half)."""
    if role not in ("teacher", "student"):
        raise ConfigError(f"role={role!r} must be 'teacher' or 'student'")
    run = RunFolder(run_dir)
    preset = SCALE_PRESETS[run.preset_name()]
    base = {"backbone": preset[f"{role}_backbone"],
            "epochs": preset["teacher_epochs" if role == "teacher" else "epochs"],
            "patience": preset["patience"], "lr_patience": preset["lr_patience"],
            "val_split": "val_teacher" if role == "teacher" else "val_student",
            **paper_defaults(run)}
    base.update({k: v for k, v in params.items() if v is not None})
    return check_names(TrainConfig.from_dict(base))


def teacher_config(run_dir, **params) -> TrainConfig:
    return train_config(run_dir, "teacher", **params)


def student_config(run_dir, **params) -> TrainConfig:
    return train_config(run_dir, "student", **params)


def default_student_name(loss: str, alpha: float, default_alpha: float = PAPER_DEFAULTS["fixed"]["alpha"]) -> str:
    """``student_<loss>`` for the paper's defaults; a non-default α appended for FND."""
    name = f"student_{loss}"
    if loss == "fnd" and alpha != default_alpha:
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


def metrics_line(metrics: dict) -> str:
    """One line of a stage's seeded test metrics, rounded so that nbval can compare it."""
    parts = [f"{p}: AUC {m['auc']:.4f} NDCG(lpae) {m['ndcg_lpae']:.4f}" for p, m in sorted(metrics["test"].items())]
    flags = [f"{k} {metrics[k]:.4f}" for k in FLAG_KEYS if k in metrics]
    return f"{metrics['stage']} (best epoch {metrics['best_epoch']}): " + "; ".join(parts + flags)


def student_name(run_dir, cfg: TrainConfig) -> str:
    """The 03_student folder name for ``cfg`` on this run folder's dataset."""
    return default_student_name(cfg.loss, cfg.alpha, paper_defaults(RunFolder(run_dir))["alpha"])


def contrastive_name(run_dir, cfg: TrainConfig) -> str:
    """The 04_contrastive folder name for ``cfg`` on this run folder's dataset."""
    pair = tuple(cfg.augmentations.split(","))
    return default_contrastive_name(pair, cfg.lam, cfg.alpha, cfg.loss, paper_defaults(RunFolder(run_dir)))


def run(run_dir: str | os.PathLike, stage: str, cfg: TrainConfig, teacher_dir: str | None = None,
        autoencoder_dir: str | None = None, overwrite: bool = False, progress: bool = True,
        callbacks: Iterable[Callback] = ()) -> dict:
    """Train (or reuse) one model into ``run_dir/stage`` and return its metrics.

    Writes ``config.json``, ``checkpoint.pt`` (best by validation AUC), ``last.pt``,
    ``history.json`` and ``metrics.json`` (test metrics for the random and the hard protocol,
    parameter counts, seconds per epoch, epochs to best, FND flag statistics).
    """
    check_names(cfg)
    run = RunFolder(run_dir)
    ds = run.dataset()
    config = {"stage": stage, "train": cfg.to_dict(),
              "teacher_dir": str(teacher_dir) if teacher_dir else None,
              "autoencoder_dir": str(autoencoder_dir) if autoencoder_dir else None,
              "dataset_fingerprint": ds.fingerprint()}
    status, finished = run.begin_stage(stage, config, overwrite=overwrite)
    if finished is not None:
        return finished
    device = resolve_device(cfg.device)
    teacher = None
    if cfg.loss in NEEDS_TEACHER:
        teacher = prepare_teacher(run.load_teacher(cfg.dim, device, teacher_dir), ds,
                                  split=cfg.train_split, device=device)
    neighbours = None
    if cfg.lam > 0 and "replace" in cfg.augmentations:
        neighbours = run.neighbours(autoencoder_dir)
    objective = make_objective(cfg, teacher=teacher, neighbours=neighbours, truth=ds.truth)
    seed_everything(cfg.seed)
    model = build_model(cfg, ds)
    result = fit(model, ds, cfg, run.stage_dir(stage), objective, resume=(status is StageStatus.PARTIAL),
                 progress=progress, callbacks=callbacks)
    n_params = count_parameters(model)
    projection = getattr(model, "projection", None)
    metrics = {"stage": stage, "model": cfg.model, "loss": cfg.loss, "backbone": cfg.backbone,
               "personalized": bool(model.personalized), "params": n_params,
               "params_inference": n_params - (count_parameters(projection) if projection is not None else 0),
               "test": evaluate(model, ds, split="test", device=device),
               "best_epoch": result["best_epoch"], "best_val_auc": result["best_val_auc"],
               "epochs_run": len(result["history"]), "epoch_seconds": result["epoch_seconds"],
               "stopped_early": result["stopped_early"], "device": device}
    for key in FLAG_KEYS:
        if key in result["history"][-1]:
            metrics[key] = float(np.mean([h[key] for h in result["history"]]))
    run.write_metrics(stage, metrics)
    return metrics
