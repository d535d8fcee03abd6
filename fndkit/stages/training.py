"""02_teacher / 03_student / 04_contrastive / 07_baselines: train one model into a stage folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Iterable

import numpy as np

from .. import distributed
from ..artifacts import write_json
from ..augment import parse_pair
from ..config import PAPER_DEFAULTS, ConfigError, TrainConfig, check_int
from ..config import train_config as preset_train_config
from ..evaluate import evaluate, evaluate_clean
from ..models.backbones import BACKBONES, count_parameters, is_weights_path
from ..baselines import BASELINES  # noqa: F401  (importing it registers the baselines and their objectives)
from ..distillation import name_suffix  # (importing it registers the distillation baselines: kd, rd …)
from ..models.registry import MODELS, model_class
from ..objectives import NEEDS_TEACHER, OBJECTIVES, make_objective, prepare_teacher
from ..repro import resolve_device, seed_everything
from ..rundir import AUTOENCODER, TEACHER, TRAINED_FILES, RunFolder, StageStatus, resolve_path
from ..train import Callback, Snapshots, TensorBoardLog, build_model, fit
from . import naming
from .naming import ALPHA_LOSSES, default_contrastive_name, default_student_name  # noqa: F401
from .params import StageParams

FLAG_KEYS = ("flagged_fraction", "flag_precision", "flag_recall", "true_fn_fraction")


def check_names(cfg: TrainConfig) -> TrainConfig:
    """The model, backbone and objective a config names exist in their registries."""
    for name, value, known in (("model", cfg.model, MODELS), ("backbone", cfg.backbone, BACKBONES),
                               ("loss", cfg.loss, OBJECTIVES)):
        if value not in known:
            raise ConfigError(f"{name}={value!r} is unknown; choose one of {sorted(known)}")
    return cfg


def paper_defaults(run: RunFolder) -> dict:
    """α and the augmentation pair the paper used for this kind of dataset (:meth:`RunFolder.paper_defaults`)."""
    return RunFolder(run).paper_defaults()


def train_config(run_dir: str | os.PathLike, role: str, **params) -> TrainConfig:
    """A TrainConfig from notebook parameters (``None`` = the preset), the run folder's scale
    preset and the paper's per-dataset defaults. ``role``: "teacher" or "student" (which picks the
    preset backbone and the validation half).

    ``weights`` is the exception to "None = the preset": ``"auto"`` (the default) takes the
    preset's (ImageNet for the AlexNets on real data, none on synthetic data), ``None`` or
    ``"none"`` means random initialisation, ``"imagenet"`` or a state-dict path are kept (a
    relative path resolved like ``run_dir``)."""
    run = RunFolder(run_dir)
    chosen = {k: v for k, v in params.items() if v is not None or k == "weights"}  # weights=None: random init
    cfg = preset_train_config(run.preset_name(), role, **{**paper_defaults(run), **chosen})
    if is_weights_path(cfg.weights):
        cfg = cfg.replace(weights=str(resolve_path(cfg.weights)))
    return check_names(cfg)


def teacher_config(run_dir, **params) -> TrainConfig:
    return train_config(run_dir, "teacher", **params)


def student_config(run_dir, **params) -> TrainConfig:
    return train_config(run_dir, "student", **params)


def metrics_line(metrics: dict) -> str:
    """One line of a stage's seeded test metrics, rounded so that nbval can compare it."""
    parts = [f"{p}: AUC {m['auc']:.4f} NDCG(lpae) {m['ndcg_lpae']:.4f}" for p, m in sorted(metrics["test"].items())]
    flags = [f"{k} {metrics[k]:.4f}" for k in FLAG_KEYS if k in metrics]
    return f"{metrics['stage']} (best epoch {metrics['best_epoch']}): " + "; ".join(parts + flags)


def student_name(run_dir, cfg: TrainConfig) -> str:
    """The 03_student folder name for ``cfg`` on this run folder's dataset."""
    return naming.student_name(cfg, paper_defaults(RunFolder(run_dir))["alpha"])


def contrastive_name(run_dir, cfg: TrainConfig) -> str:
    """The 04_contrastive folder name for ``cfg`` on this run folder's dataset."""
    return naming.contrastive_name(cfg, paper_defaults(RunFolder(run_dir)))


def baseline_name(cfg: TrainConfig) -> str:
    """The 07_baselines folder name (:func:`fndkit.stages.naming.baseline_name`)."""
    return naming.baseline_name(cfg, getattr(model_class(cfg.model), "objective", "bpr"))


def baseline_config(run_dir: str | os.PathLike, model: str, **params) -> TrainConfig:
    """07_baselines: the TrainConfig of a registered ``model`` on this run folder — the student's
    preset (its backbone family, d = 128, the student validation half, the scale's epochs) with
    ``loss`` the model's own objective and the model's ``train_defaults`` (lr, τ …) unless
    ``params`` set them (``None`` = default). A model without those attributes trains with BPR
    (the baselines' loss, paper §4.1.3). Non-personalized models "cannot distinguish users" and
    are left out of the hard-negative protocol (§4.4): ``hard_fraction > 0`` is refused for them."""
    if model not in MODELS:
        raise ConfigError(f"model={model!r} is unknown; choose one of {sorted(MODELS)}")
    cls = model_class(model)
    chosen = {k: v for k, v in params.items() if v is not None and k != "weights"}
    merged = {"loss": getattr(cls, "objective", "bpr"), **getattr(cls, "train_defaults", {}), **chosen}
    hard = merged.get("hard_fraction", 0)
    if not getattr(cls, "personalized", True) and isinstance(hard, (int, float)) and hard > 0:
        raise ConfigError(f"model={model!r} is not personalized: it ranks every user's candidates alike, so "
                          f"the paper leaves it out of the hard-negative protocol (§4.4); use hard_fraction=0")
    if "weights" in params:
        merged["weights"] = params["weights"]
    return train_config(run_dir, "student", model=model, **merged)


# The notebook behind each kind of training stage (``python -m fndkit train --stage KIND``).
STAGE_NOTEBOOKS = {"teacher": "02_teacher", "student": "03_student", "contrastive": "04_contrastive",
                   "baseline": "07_baselines"}
# Parameters of those notebooks that say where and how to run, not what to train (the rest are the config's).
_RUN_KEYS = {"teacher": ("snapshot_epochs",), "student": ("teacher_dir", "budget_epochs"),
             "contrastive": ("teacher_dir", "autoencoder_dir"), "baseline": ()}


@dataclass(frozen=True)
class StagePlan:
    """What a training notebook does with its parameters: ``run(run_dir, stage, cfg, **kwargs)``."""

    run_dir: str | os.PathLike
    stage: str
    cfg: TrainConfig
    kwargs: dict = field(default_factory=dict)

    def run(self, **extra) -> dict:
        """Train (or reuse) the stage; ``extra`` adds :func:`run` arguments (``progress``, ``callbacks``)."""
        return run(self.run_dir, self.stage, self.cfg, **self.kwargs, **extra)

    def check(self, evaluate_test: bool = True) -> None:
        """Refuse now, before anything is announced or trained, what :meth:`run` would refuse
        when it claims the folder: a finished run there with another config (the message names
        each differing key with both values). Nothing when the stage is new, the same or partial."""
        run_folder = RunFolder(self.run_dir)
        config = stage_config(run_folder, self.stage, self.cfg, self.kwargs.get("teacher_dir"),
                              self.kwargs.get("autoencoder_dir"), evaluate_test)
        run_folder.refuse_other(self.stage, config, overwrite=self.kwargs.get("overwrite", False))


def plan_stage(kind: str, params: dict) -> StagePlan:
    """The training stage a notebook's parameters describe: the one code path of 02_teacher,
    03_student, 04_contrastive and 07_baselines (``kind`` teacher / student / contrastive /
    baseline) and of ``python -m fndkit train --stage KIND``.

    ``params``: the names of the notebook's ``parameters`` cell and their values (``run_dir``,
    ``seed``, ``overwrite`` … ``out_name`` where the notebook has one). The command line reads
    those names and defaults from the notebook itself and refuses any other name; called directly,
    any :class:`~fndkit.config.TrainConfig` field is accepted too.
    """
    if kind not in STAGE_NOTEBOOKS:
        raise ConfigError(f"stage kind {kind!r} is unknown; choose one of {sorted(STAGE_NOTEBOOKS)}")
    params = dict(params)
    run_dir, overwrite = params.pop("run_dir"), params.pop("overwrite", False)
    out_name = params.pop("out_name", None)
    kwargs = {k: params.pop(k) for k in _RUN_KEYS[kind] if k in params}
    if kind == "teacher":
        cfg, stage = teacher_config(run_dir, loss="npair", **params), "teacher"
    elif kind == "student":
        cfg = student_config(run_dir, **params)
        stage = out_name or student_name(run_dir, cfg)
    elif kind == "contrastive":
        lam, pair = params.get("lam"), params.pop("augmentations", None)
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or lam <= 0:
            raise ConfigError(f"lam={lam!r} must be > 0 for contrastive learning; use 03_student "
                              f"(--stage student) for lam = 0")
        cfg = student_config(run_dir, augmentations=",".join(parse_pair(pair)) if pair else None, **params)
        stage = out_name or contrastive_name(run_dir, cfg)
    else:
        cfg = baseline_config(run_dir, params.pop("model", None), **params)
        stage = out_name or baseline_name(cfg)
    if kind != "teacher":  # never write into the run's own inputs, overwrite or not
        RunFolder(run_dir).check_out_name(stage, reads=(TEACHER, kwargs.get("teacher_dir"),
                                                       AUTOENCODER, kwargs.get("autoencoder_dir")))
    return StagePlan(run_dir, stage, cfg, {"overwrite": overwrite, **kwargs})


def run(run_dir: str | os.PathLike, stage: str, cfg: TrainConfig, teacher_dir: str | None = None,
        autoencoder_dir: str | None = None, overwrite: bool = False, progress: bool = True,
        callbacks: Iterable[Callback] = (), snapshot_epochs: Iterable[int] = (),
        budget_epochs: int | None = None, claim_timeout: float | None = None, evaluate_test: bool = True,
        tensorboard: bool = False) -> dict:
    """Train (or reuse) one model into ``run_dir/stage`` and return its metrics.

    Writes ``config.json``, ``checkpoint.pt`` (best by validation AUC), ``last.pt``,
    ``history.json`` and ``metrics.json`` (test metrics for the random and the hard protocol,
    parameter counts, seconds per epoch, epochs to best, FND flag statistics).

    snapshot_epochs: also keep the weights after these epochs (``RunFolder.snapshots``; e.g. a
    teacher's strength against its epochs). budget_epochs: also report, as ``metrics["budget"]``,
    the test metrics of the best checkpoint within that many epochs — the fixed-budget result of
    the same run (the trajectory up to it is the same), beside the converged one.
    claim_timeout: how long to wait while another process trains the same stage folder (None: as
    long as it trains; 0: refuse at once); see :mod:`fndkit.rundir`.
    evaluate_test: False for a hyper-parameter search's trial — the model is selected on validation
    only, so the test candidates are never scored (``metrics["test"]`` is empty, no
    ``per_user_auc.json``; the folder's config records it, so a later run that wants test numbers
    does not reuse it by mistake).
    tensorboard: also write the epochs' scalars and the hyper-parameters as TensorBoard events
    under the stage folder (:class:`fndkit.train.TensorBoardLog`).
    """
    check_names(cfg)
    if isinstance(snapshot_epochs, (str, bytes)) or not isinstance(snapshot_epochs, (list, tuple, range)):
        raise ConfigError(f"snapshot_epochs={snapshot_epochs!r} must be a list of epochs, e.g. [1, 2, 5]")
    for epoch in snapshot_epochs:
        check_int("snapshot_epochs", epoch, 1, f" in {list(snapshot_epochs)!r}")
    if budget_epochs is not None:
        check_int("budget_epochs", budget_epochs, 1, " (or None)")
    run = RunFolder(run_dir)
    run.check_out_name(stage, reads=(teacher_dir, autoencoder_dir))
    ds = run.dataset()
    config = stage_config(run, stage, cfg, teacher_dir, autoencoder_dir, evaluate_test)
    # under torchrun rank 0 decides (reuse / refuse / resume) and prepares the folder; all follow
    # (and claims the folder: another process asking for this stage waits until end_stage)
    status, finished = distributed.run_on_main(run.begin_stage, stage, config, overwrite=overwrite,
                                               claim_timeout=claim_timeout, requires=TRAINED_FILES)
    if finished is not None:
        return finished
    try:
        callbacks = list(callbacks)
        if tensorboard:
            callbacks.append(TensorBoardLog(run.stage_dir(stage)))
        return _train(run, ds, stage, cfg, status, teacher_dir, autoencoder_dir, progress, callbacks,
                      snapshot_epochs, budget_epochs, evaluate_test)
    except BaseException:  # bad input, a full disk, Ctrl-C: a stage without a finished epoch leaves nothing
        if distributed.is_main():
            run.discard_unfinished(stage)
        raise
    finally:
        run.end_stage(stage)  # releases rank 0's claim (nothing on the other ranks)


def stage_config(run: RunFolder, stage: str, cfg: TrainConfig, teacher_dir=None, autoencoder_dir=None,
                 evaluate_test: bool = True) -> dict:
    """What a training stage's ``config.json`` holds: the run folder compares it with a finished
    run's to reuse or refuse it (:meth:`RunFolder.begin_stage`)."""
    config = {"stage": stage, "train": cfg.to_dict(),
              "teacher_dir": str(teacher_dir) if teacher_dir else None,
              "autoencoder_dir": str(autoencoder_dir) if autoencoder_dir else None,
              "dataset_fingerprint": run.dataset().fingerprint()}
    if not evaluate_test:  # only then: the configs of every earlier stage stay as they were
        config["evaluate_test"] = False
    return config


def _train(run: RunFolder, ds, stage: str, cfg: TrainConfig, status: StageStatus, teacher_dir, autoencoder_dir,
           progress: bool, callbacks: Iterable[Callback], snapshot_epochs: Iterable[int],
           budget_epochs: int | None, evaluate_test: bool = True) -> dict:
    """:func:`run` once the stage folder is ready: load the teacher, fit (resuming from last.pt when
    ``status`` is PARTIAL), evaluate, write the metrics."""
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
    callbacks = list(callbacks)
    if snapshot_epochs:
        callbacks.append(Snapshots(snapshot_epochs, lambda e: run.snapshot_path(stage, e)))
    if budget_epochs is not None:
        callbacks.append(Snapshots([budget_epochs], lambda e: run.snapshot_path(stage, e), best=True))
    result = fit(model, ds, cfg, run.stage_dir(stage), objective, resume=(status is StageStatus.PARTIAL),
                 progress=progress, callbacks=callbacks)
    n_params = count_parameters(model)
    projection = getattr(model, "projection", None)
    metrics = {"stage": stage, "model": cfg.model, "loss": cfg.loss, "backbone": cfg.backbone,
               "personalized": bool(model.personalized), "params": n_params,
               "params_inference": n_params - (count_parameters(projection) if projection is not None else 0),
               "test": evaluate(model, ds, split="test", device=device, per_user=True) if evaluate_test else {},
               # synthetic data: the same lists without their true false negatives (empty otherwise)
               "test_clean": evaluate_clean(model, ds, split="test", device=device, per_user=True) if evaluate_test else {},
               "best_epoch": result["best_epoch"], "best_val_auc": result["best_val_auc"],
               "epochs_run": len(result["history"]), "epoch_seconds": result["epoch_seconds"],
               "stopped_early": result["stopped_early"], "device": device, "world_size": distributed.world_size(),
               "initial_weights": getattr(model, "initial_weights", None)}
    for key in FLAG_KEYS:
        if key in result["history"][-1]:
            metrics[key] = float(np.mean([h[key] for h in result["history"]]))
    if not evaluate_test:
        metrics["test_evaluated"] = False
    if budget_epochs is not None and evaluate_test:
        metrics["budget"] = _budget_metrics(run, stage, budget_epochs, result, metrics, ds, device)
    # per-user AUC beside the metrics (paired tests between models), not inside them
    per_user = {p: m.pop("per_user_auc") for p, m in metrics["test"].items()}
    per_user_clean = {p: m.pop("per_user_auc") for p, m in (metrics.get("test_clean") or {}).items()
                      if "per_user_auc" in m}
    if distributed.is_main():
        if evaluate_test:
            write_json(run.path(stage, "per_user_auc.json"), per_user)
            if per_user_clean:
                write_json(run.path(stage, "per_user_auc_clean.json"), per_user_clean)
        run.write_metrics(stage, metrics)
    distributed.barrier()
    return metrics


def _budget_metrics(run: RunFolder, stage: str, budget: int, result: dict, metrics: dict, ds, device) -> dict:
    """Test metrics of the best checkpoint within ``budget`` epochs (see :func:`run`)."""
    path = run.snapshot_path(stage, budget)
    if not path.exists():  # stopped (or ran out of epochs) before the budget: the final best is it
        return {"epochs": budget, "best_epoch": result["best_epoch"],
                "test": {p: {k: v for k, v in m.items() if k != "per_user_auc"}
                         for p, m in metrics["test"].items()}}
    model, payload = run.load_model(str(path), device=device)
    return {"epochs": budget, "best_epoch": payload["metrics"]["epoch"],
            "test": evaluate(model, ds, split="test", device=device)}


# ------------------------------------------------------------------------------------------------
# the stage contract: each training notebook's parameters cell as a dataclass


@dataclass(frozen=True)
class _TrainingParams(StageParams):
    """What every training notebook's cell shares; ``None`` means the scale's preset."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("epochs", "max_steps_per_epoch", "budget_epochs"):  # None: the preset / every batch
            value = getattr(self, name, None)
            if value is not None:
                check_int(name, value, None, " (or None for the preset)")
                if value < 1:  # 0 once meant "no cap" at the command line: never silently
                    raise ConfigError(f"{name}={value!r} must be at least 1 (or None for the preset)")

    def plan(self) -> StagePlan:
        """The stage these parameters describe (folder name, config), without training."""
        return plan_stage(self.kind, self.to_dict())


@dataclass(frozen=True)
class TeacherParams(_TrainingParams):
    """notebooks/02_teacher's parameters cell."""

    kind: ClassVar[str] = "teacher"
    notebook: ClassVar[str] = "02_teacher"

    run_dir: str = "outputs/demo"
    backbone: str | None = None
    weights: str | None = "auto"
    epochs: int | None = None
    max_steps_per_epoch: int | None = None
    batch_size: int = 32
    lr: float = 0.01
    tau: float = 0.1
    n_negatives: int | None = None
    hard_fraction: float = 0.0
    negatives: str = "shared"
    snapshot_epochs: list = field(default_factory=lambda: [1, 2, 5, 10, 20])
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False


@dataclass(frozen=True)
class StudentParams(_TrainingParams):
    """notebooks/03_student's parameters cell."""

    kind: ClassVar[str] = "student"
    notebook: ClassVar[str] = "03_student"

    run_dir: str = "outputs/demo"
    loss: str = "fnd"
    alpha: float | None = None
    tau: float = 0.1
    kd_weight: float = 0.5
    kd_temperature: float = 2.0
    rd_k: int = 5
    backbone: str | None = None
    weights: str | None = "auto"
    teacher_dir: str | None = None
    out_name: str | None = None
    epochs: int | None = None
    max_steps_per_epoch: int | None = None
    batch_size: int = 32
    lr: float = 0.01
    n_negatives: int | None = None
    hard_fraction: float = 0.0
    negatives: str = "shared"
    budget_epochs: int | None = None
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False


@dataclass(frozen=True)
class ContrastiveParams(_TrainingParams):
    """notebooks/04_contrastive's parameters cell."""

    kind: ClassVar[str] = "contrastive"
    notebook: ClassVar[str] = "04_contrastive"

    run_dir: str = "outputs/demo"
    augmentations: str | None = None
    lam: float = 0.2
    tau_cl: float = 0.1
    alpha: float | None = None
    tau: float = 0.1
    loss: str = "fnd"
    teacher_dir: str | None = None
    autoencoder_dir: str | None = None
    out_name: str | None = None
    backbone: str | None = None
    weights: str | None = "auto"
    epochs: int | None = None
    max_steps_per_epoch: int | None = None
    batch_size: int = 32
    lr: float = 0.01
    n_negatives: int | None = None
    hard_fraction: float = 0.0
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False


@dataclass(frozen=True)
class BaselineParams(_TrainingParams):
    """notebooks/07_baselines's parameters cell (``None``: the model's own default)."""

    kind: ClassVar[str] = "baseline"
    notebook: ClassVar[str] = "07_baselines"

    run_dir: str = "outputs/demo"
    model: str = "lpae-u"
    backbone: str | None = None
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    tau: float | None = None
    hard_fraction: float = 0.0
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False
    out_name: str | None = None


PARAMS = {p.kind: p for p in (TeacherParams, StudentParams, ContrastiveParams, BaselineParams)}


def execute(params: _TrainingParams, progress: bool = True, callbacks: Iterable[Callback] = (),
            **run_options) -> dict:
    """A training notebook's work for ``params``: seed, plan the stage, train (or reuse) it.
    ``run_options``: further :func:`run` arguments (``evaluate_test``, ``tensorboard``)."""
    seed_everything(params.seed)
    return params.plan().run(progress=progress, callbacks=callbacks, **run_options)
