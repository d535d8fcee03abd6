"""One model-agnostic ``fit()`` for the teacher, the students, FND-CL and every baseline.

``fit()`` is a short loop: per step a batch of B positive (user, outfit) pairs and N sampled
negatives — shared by them, or each pair's own with ``negatives="per_pair"`` (eq. 10) — (random
mixtures, a ``hard_fraction`` of other users' positives), then
``loss, stats = objective(model, batch)`` (see :mod:`fndkit.objectives`), backward, gradient
values or their global norm clipped where the model asks for it (its ``grad_clip_value`` /
``grad_clip_norm``, see :mod:`fndkit.models.contract`), SGD step.
Everything around the loop is a callback that receives the :class:`Trainer`:

- :class:`Validate` — validation AUC each epoch (the record's ``val_auc``);
- :class:`PlateauLR` — ReduceLROnPlateau on validation AUC (LPAE's schedule);
- :class:`Checkpoint` — ``checkpoint.pt`` (best by validation AUC), ``history.json``;
- :class:`EarlyStopping` — stop after ``patience`` epochs without a better validation AUC;
- :class:`ProgressLog` — one line per epoch;
- :class:`Snapshots` (opt-in) — the weights after chosen epochs;
- :class:`TensorBoardLog` (opt-in) — each epoch's scalars and, at the end, the hyper-parameters
  with the final metrics, as TensorBoard event files under the stage folder.

A hyper-parameter search adds its own callback (``fndkit.plans.study`` reports validation AUC to an
Optuna trial and stops a pruned one through ``trainer.should_stop``): ``fit`` knows no search engine.

Resume state is one :class:`TrainState` (epoch, best, history, optimizer, scheduler, objective and
every RNG state) that ``fit`` saves in ``last.pt`` after each epoch's callbacks; ``fit(...,
resume=True)`` continues from it. Batches, negatives (seeded by seed, epoch and step) and the
restored generators make a run killed mid-epoch and resumed equal, bitwise on CPU, to one that never
stopped (tests/test_faults.py kills one with SIGKILL).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .artifacts import atomic_path, jsonable, load_checkpoint, save_checkpoint, write_json
from .config import TrainConfig, identity, within_budget
from .data.datasets import make_loader
from .feeding import prefetch_images
from .data.sampling import NegativeSampler
from .data.schema import OutfitDataset
from .distributed import BatchShard
from .evaluate import evaluate
from .models.backbones import weights_or_scratch
from .models.contract import OutfitModel, make_image_fn
from .models.registry import build_model as _build_registered
from .models.registry import load_model  # noqa: F401 (re-exported: checkpoints of any model)
from .objectives import Objective, TrainBatch
from .repro import resolve_device, run_metadata


def build_model(cfg: TrainConfig, dataset: OutfitDataset) -> OutfitModel:
    """The model a TrainConfig describes (``cfg.model``, a registry name), sized for ``dataset``.

    Its backbone starts from ``cfg.weights``: ImageNet when torchvision's file is in the local
    cache (else from scratch, saying so in one printed line), or a state-dict file. What it
    started from is kept in ``model.initial_weights`` (``requested`` plus the backbone's record:
    ``weights``, ``file``, ``sha256``, ``tensors``); :func:`fit` writes it into every checkpoint.
    """
    weights = weights_or_scratch(cfg.weights, cfg.backbone)
    model = _build_registered(cfg.model, backbone=cfg.backbone, n_users=dataset.n_users, dim=cfg.dim,
                              heads=cfg.heads, weights=weights)
    record = getattr(getattr(model, "backbone", None), "initial_weights", None)
    model.initial_weights = {"requested": cfg.weights, **(record or {"weights": weights, "file": None,
                                                                     "sha256": None, "tensors": 0})}
    if model.initial_weights["file"]:
        print(f"{cfg.backbone} starts from {model.initial_weights['file']} "
              f"({model.initial_weights['tensors']} tensors copied)")
    if cfg.lam > 0:
        if not hasattr(model, "add_projection_head"):
            raise ValueError(f"lam={cfg.lam} needs a model with outfit vectors and a projection head; "
                             f"model={cfg.model!r} has none: use lam=0")
        model.add_projection_head(cfg.projection_dim)
    return model


@dataclass
class TrainState:
    """Everything a resumed run needs to continue as if it had never stopped."""

    epoch: int = 0                      # epochs completed
    best_metric: float = -np.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    optimizer: dict = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)
    objective: dict = field(default_factory=dict)
    torch_rng: Any = None
    stopped_early: bool = False
    rng: dict = field(default_factory=dict)  # the CUDA, NumPy and Python generators (torch_rng: the CPU one)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


class Callback:
    """Hooks into :func:`fit`; override what you need. Each receives the :class:`Trainer`."""

    def on_fit_start(self, trainer: "Trainer") -> None:
        pass

    def on_batch_end(self, trainer: "Trainer") -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer") -> None:
        pass

    def on_fit_end(self, trainer: "Trainer") -> None:
        """After the last epoch (also when a callback stopped the run), before the best weights
        are loaded back."""


@dataclass
class Trainer:
    """What callbacks see: the model, config, optimizer, the running state and this epoch's record."""

    model: OutfitModel
    dataset: OutfitDataset
    cfg: TrainConfig
    objective: Objective
    out_dir: Path
    device: str
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: TrainState
    config_dict: dict
    record: dict = field(default_factory=dict)
    step: int = 0
    loss: float = float("nan")
    should_stop: bool = False


class Validate(Callback):
    """Validation AUC (and NDCG) on ``cfg.val_split``: the hard protocol when training with hard
    negatives, else random mixtures."""

    def on_epoch_end(self, t):
        protocol = "hard" if t.cfg.hard_fraction > 0 else "random"
        val = evaluate(t.model, t.dataset, split=t.cfg.val_split, protocols=(protocol,), device=t.device)
        t.record["val_auc"] = val[protocol]["auc"]
        t.record["val_ndcg_lpae"] = val[protocol]["ndcg_lpae"]


class PlateauLR(Callback):
    """Halve the learning rate when validation AUC stops improving (LPAE's schedule)."""

    def on_epoch_end(self, t):
        t.scheduler.step(t.record["val_auc"])
        t.record["lr"] = t.optimizer.param_groups[0]["lr"]


class Checkpoint(Callback):
    """``checkpoint.pt`` when validation AUC improves, ``history.json`` every epoch (``fit`` writes
    ``last.pt`` itself, after every callback: see :func:`save_resume_state`)."""

    def on_epoch_end(self, t):
        s = t.state
        if t.record["val_auc"] > s.best_metric:
            s.best_metric, s.best_epoch, s.bad_epochs = t.record["val_auc"], t.record["epoch"], 0
            if distributed.is_main():  # under torchrun every process keeps the state, rank 0 writes
                save_checkpoint(t.out_dir / "checkpoint.pt", state_dict=t.model.state_dict(), config=t.config_dict,
                                metrics={"val_auc": t.record["val_auc"], "epoch": t.record["epoch"]},
                                extra={"run": run_metadata(t.device)})
        else:
            s.bad_epochs += 1
        s.history.append(dict(t.record))
        if distributed.is_main():
            write_json(t.out_dir / "history.json", s.history)


def save_resume_state(t: "Trainer") -> None:
    """Commit the epoch just finished: ``last.pt`` with the weights and the :class:`TrainState`
    (optimizer, scheduler, objective and every random generator). Written after all callbacks, so
    that a run killed at any moment resumes from the last epoch whose every artifact was written
    (and a stop decided by EarlyStopping is kept)."""
    s = t.state
    s.epoch = t.record["epoch"]
    s.optimizer, s.scheduler = t.optimizer.state_dict(), t.scheduler.state_dict()
    s.objective, s.torch_rng = jsonable(t.objective.state_dict()), torch.get_rng_state()
    s.rng = {"numpy": jsonable(np.random.get_state()), "python": jsonable(random.getstate()),
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    if distributed.is_main():
        save_checkpoint(t.out_dir / "last.pt", state_dict=t.model.state_dict(), config=t.config_dict,
                        metrics=t.record, extra={"train_state": s.to_dict()})


def restore_rng(state: TrainState) -> None:
    """Put back the random generators :func:`save_resume_state` saved."""
    if state.torch_rng is not None:
        torch.set_rng_state(state.torch_rng)
    if state.rng.get("numpy") is not None:
        name, keys, *rest = state.rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    if state.rng.get("python") is not None:
        version, internal, gauss = state.rng["python"]
        random.setstate((version, tuple(internal), gauss))
    cuda = state.rng.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class EarlyStopping(Callback):
    """Stop after ``cfg.patience`` epochs without a better validation AUC, or at the first such
    epoch once the learning rate is at or below ``cfg.lr_floor × cfg.lr`` (:func:`replay_stopping`)."""

    def on_epoch_end(self, t):
        floor = t.cfg.lr_floor > 0 and t.state.bad_epochs > 0 and t.record["lr"] <= t.cfg.lr_floor * t.cfg.lr
        if t.state.bad_epochs >= t.cfg.patience or floor:
            t.state.stopped_early = t.should_stop = True


def replay_stopping(history: list[dict], patience: int, epochs: int | None = None, min_delta: float = 0.0,
                    lr_floor: float = 0.0, lr: float | None = None) -> dict:
    """What a run with another stopping rule would have done, read from a longer run's
    ``history.json``: the trajectory is the same up to the earlier stop (the plateau schedule
    never reads the budget), so the replay is exact, not an estimate. Rules: ``patience`` epochs
    without a better validation AUC (:class:`EarlyStopping`; with ``min_delta`` only a gain over
    the best by more than it resets the count), a budget of ``epochs``, and ``lr_floor``
    (:class:`~fndkit.config.TrainConfig`'s: stop at the first epoch that did not improve once the
    learning rate is at or below ``lr_floor × lr``, ``lr`` the run's initial one). The checkpoint
    still keeps every better epoch (:class:`Checkpoint`). Returns ``stop_epoch``, ``best_epoch``,
    ``best_val_auc`` and ``train_seconds`` (the steps' time up to the stop)."""
    best, best_epoch, reset_at, bad, seconds, stop = float("-inf"), 0, float("-inf"), 0, 0.0, 0
    for record in history:
        if epochs is not None and record["epoch"] > epochs:
            break
        stop, seconds = record["epoch"], seconds + float(record.get("seconds", 0.0))
        auc = record["val_auc"]
        if auc > best:
            best, best_epoch = auc, record["epoch"]
        if auc > reset_at + min_delta:
            reset_at, bad = auc, 0
        else:
            bad += 1
        if bad >= patience or (lr_floor > 0 and bad and record["lr"] <= lr_floor * lr):
            break
    return {"stop_epoch": stop, "best_epoch": best_epoch, "best_val_auc": best, "train_seconds": seconds}


class ProgressLog(Callback):
    def on_epoch_end(self, t):
        tqdm.write(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.record.items()))


class Snapshots(Callback):
    """After each of ``epochs`` (1-based), save to ``path_for(epoch)`` the weights as they are
    (a teacher's strength against its epochs) or, with ``best=True``, the best checkpoint so far
    (what a run with that epoch budget would have kept: runs share their trajectory up to it).
    Must come after :class:`Checkpoint` (``fit`` runs the defaults first)."""

    def __init__(self, epochs: Iterable[int], path_for, best: bool = False):
        self.epochs = sorted({int(e) for e in epochs})
        if any(e < 1 for e in self.epochs):
            raise ValueError(f"snapshot epochs must be >= 1, got {self.epochs}")
        self.path_for, self.best = path_for, best

    def on_epoch_end(self, t):
        epoch = t.record["epoch"]
        if epoch not in self.epochs or not distributed.is_main():
            return
        if self.best:
            with atomic_path(self.path_for(epoch)) as tmp:
                shutil.copyfile(t.out_dir / "checkpoint.pt", tmp)
        else:
            save_checkpoint(self.path_for(epoch), state_dict=t.model.state_dict(), config=t.config_dict,
                            metrics={"val_auc": t.record.get("val_auc"), "epoch": epoch})


class TensorBoardLog(Callback):
    """TensorBoard event files in ``log_dir`` (the stage folder, so ``tensorboard --logdir <run
    folder>`` shows every stage): per epoch every number of the record under ``train/`` (loss,
    FND's flagged fraction and flag precision / recall where the objective reports them …) and
    ``val/`` (validation AUC, NDCG) plus ``lr``; at the end the run's hyper-parameters with its
    final metrics (best validation AUC, best epoch) for the HParams tab. A resumed run appends to
    the same folder (TensorBoard shows the steps once: it keeps the latest event per step)."""

    VAL_KEYS = {"val_auc": "val/auc", "val_ndcg_lpae": "val/ndcg_lpae"}
    SKIP = {"epoch", "seconds", "lr"}
    HPARAMS = ("model", "loss", "backbone", "lr", "batch_size", "tau", "alpha", "lam", "tau_cl",
               "augmentations", "hard_fraction", "negatives", "epochs", "seed")

    def __init__(self, log_dir: str | Path):
        self.log_dir, self.writer = Path(log_dir), None

    def on_fit_start(self, t):
        if distributed.is_main():
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package: opt-in

            self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def on_epoch_end(self, t):
        if self.writer is None:
            return
        epoch = t.record["epoch"]
        for key, value in t.record.items():
            if key in self.SKIP or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            self.writer.add_scalar(self.VAL_KEYS.get(key, f"train/{key}"), value, epoch)
        self.writer.add_scalar("lr", t.optimizer.param_groups[0]["lr"], epoch)
        self.writer.flush()

    def on_fit_end(self, t):
        if self.writer is None:
            return
        cfg = t.cfg.to_dict()
        hparams = {k: cfg[k] for k in self.HPARAMS if k in cfg and isinstance(cfg[k], (int, float, str, bool))}
        final = {"hparam/best_val_auc": float(t.state.best_metric), "hparam/best_epoch": float(t.state.best_epoch),
                 "hparam/epochs_run": float(len(t.state.history))}
        # run_name=".": the hparams event beside the scalars, not in a sub-folder per call
        self.writer.add_hparams(hparams, final, run_name=".")
        self.writer.close()
        self.writer = None


def default_callbacks(progress: bool = True) -> list[Callback]:
    """Validate → PlateauLR → Checkpoint → EarlyStopping (→ ProgressLog): the order matters."""
    return [Validate(), PlateauLR(), Checkpoint(), EarlyStopping()] + ([ProgressLog()] if progress else [])


def fit(model: OutfitModel, dataset: OutfitDataset, cfg: TrainConfig, out_dir: str | Path,
        objective: Objective, callbacks: Iterable[Callback] = (), resume: bool = False,
        progress: bool = True, prefetch: bool | None = None) -> dict:
    """Train ``model`` on ``cfg.train_split`` with ``objective``; keep the best weights by
    validation AUC (left loaded in ``model``).

    Writes ``out_dir/checkpoint.pt`` (best), ``last.pt`` (resume), ``history.json``. Returns
    ``{"history", "best_epoch", "best_val_auc", "stopped_early", "epoch_seconds"}``.

    Under torchrun (:mod:`fndkit.distributed`) every process calls it: ``cfg.batch_size`` is the
    global batch, split over the processes; the model trains inside DDP; only rank 0 writes.

    prefetch: gather each step's images in a background thread, pinned and copied to the device
    without blocking, while the previous step computes (:mod:`fndkit.feeding`); None (the
    default) turns it on for CUDA only. The batches and the result are the same either way.
    """
    device = resolve_device(cfg.device)
    if prefetch is None:
        prefetch = str(device).startswith("cuda")
    progress = progress and distributed.is_main()  # one progress bar and log under torchrun
    t = _start(model, dataset, cfg, Path(out_dir), objective, device, resume)
    callbacks = default_callbacks(progress) + list(callbacks)
    for cb in callbacks:
        cb.on_fit_start(t)
    feed = _Feed(model, dataset, cfg, device, prefetch)
    epoch = t.state.epoch
    while epoch < cfg.epochs and not t.state.stopped_early:
        _train_epoch(t, feed, epoch, callbacks, progress)
        save_resume_state(t)
        distributed.barrier()  # the others wait until rank 0 has written the epoch
        epoch += 1
        if t.should_stop:
            break
    for cb in callbacks:
        cb.on_fit_end(t)
    best = load_checkpoint(t.out_dir / "checkpoint.pt", map_location=device)
    model.load_state_dict(best["state_dict"])
    state = t.state
    seconds = [h["seconds"] for h in state.history]
    return {"history": state.history, "best_epoch": state.best_epoch, "best_val_auc": float(state.best_metric),
            "stopped_early": state.stopped_early, "epoch_seconds": float(np.mean(seconds)) if seconds else None}


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, objective: Objective | None = None) -> torch.optim.SGD:
    """The optimizer of every training step (:func:`fit` and the benches that time its step): SGD
    with ``cfg``'s momentum and weight decay at the batch-scaled learning rate; the objective's own
    parameters (a latent hint's projection) train beside the model's."""
    params = [*model.parameters(), *(objective.parameters() if objective is not None else ())]
    return torch.optim.SGD(params, lr=cfg.scaled_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _start(model: OutfitModel, dataset: OutfitDataset, cfg: TrainConfig, out_dir: Path, objective: Objective,
           device: str, resume: bool) -> Trainer:
    """Everything :func:`fit` sets up once: the model on its device, the optimizer and the LR
    schedule, and (``resume``) their state, the objective's and the random generators' from
    ``out_dir/last.pt``."""
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    objective.check_model(model)
    model.to(device)
    optimizer = make_optimizer(model, cfg, objective)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    config_dict = {"model": model.config(), "train": cfg.to_dict(),
                   "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(),
                               "n_users": dataset.n_users, "image_size": dataset.image_size},
                   "initial_weights": getattr(model, "initial_weights", None)}
    state = _resume_state(out_dir / "last.pt", cfg, model, device) if resume else TrainState()
    if state.optimizer:
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        objective.load_state_dict(state.objective)
        restore_rng(state)
    return Trainer(model, dataset, cfg, objective, out_dir, device, optimizer, scheduler, state, config_dict)


class _Feed:
    """Where an epoch's batches come from and how a step runs: the loader of the epoch (this
    process's shard under torchrun), the negative sampler, the images, the prefetching thread when
    asked for, and the training step (inside DDP under torchrun), all made once per fit."""

    def __init__(self, model: OutfitModel, dataset: OutfitDataset, cfg: TrainConfig, device: str, prefetch: bool):
        self.dataset, self.cfg, self.device, self.prefetch = dataset, cfg, device, prefetch
        self.train_step = distributed.training_step(model)
        self.clip_value = getattr(model, "grad_clip_value", None)  # the model's own published clipping
        self.clip_norm = getattr(model, "grad_clip_norm", None)
        self.input_size = model.input_size
        self.sampler = NegativeSampler(dataset, split=cfg.train_split, n_negatives=cfg.negatives_per_pair,
                                       hard_fraction=cfg.hard_fraction, seed=cfg.seed, mode=cfg.negatives)
        self.image_fn = make_image_fn(dataset.images, model.input_size, device)
        self.world = distributed.world_size()
        # torchrun: this process's share of the single-process batches, reshuffled by set_epoch
        self.shard_loader = (make_loader(dataset, cfg.train_split, cfg.batch_size, shuffle=True,
                                         seed=cfg.seed * 100003, drop_last=True, num_replicas=self.world,
                                         rank=distributed.rank()) if self.world > 1 else None)

    def epoch(self, epoch: int) -> tuple[int, Iterator[TrainBatch]]:
        """(steps, batches) of ``epoch``."""
        cfg = self.cfg
        if self.shard_loader is None:
            loader = make_loader(self.dataset, cfg.train_split, cfg.batch_size, shuffle=True,
                                 seed=cfg.seed * 100003 + epoch, drop_last=True)
        else:
            loader = self.shard_loader
            loader.sampler.set_epoch(epoch)
        n_steps = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
        batches = (train_batch(raw, self.sampler, self.image_fn, self.device, epoch, step)
                   for step, raw in zip(range(n_steps), loader))
        if self.prefetch:
            batches = prefetch_images(batches, self.dataset.images, self.input_size, self.device)
        return n_steps, batches


def _train_epoch(t: Trainer, feed: _Feed, epoch: int, callbacks: list[Callback], progress: bool) -> None:
    """One epoch of SGD steps; leaves its record in ``t.record`` and calls the callbacks."""
    model, cfg, objective, optimizer = t.model, t.cfg, t.objective, t.optimizer
    train_step, clip_value, clip_norm = feed.train_step, feed.clip_value, feed.clip_norm
    model.train()
    model.start_epoch(epoch)   # the model's own per-epoch schedule, if any (contract)
    n_steps, batches = feed.epoch(epoch)
    t0, sums = time.perf_counter(), {}
    bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
    for step, batch in enumerate(batches):
        loss, stats = train_step(objective, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                f"(lr={optimizer.param_groups[0]['lr']:.3g}, tau={cfg.tau}); lower lr or raise tau")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_value is not None:   # the model's own published training clips (contract)
            torch.nn.utils.clip_grad_value_(model.parameters(), clip_value)
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        for k, v in stats.items():
            sums[k] = sums.get(k, 0) + v
        t.step, t.loss = step, loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{t.loss:.3f}")
        for cb in callbacks:
            cb.on_batch_end(t)
    bar.close()
    # torchrun: every process's steps count (each process's stats are of its share of the batch)
    sums = distributed.sum_over_processes(sums)
    t.record = {"epoch": epoch + 1, **objective.summarize(sums, n_steps * feed.world),
                "seconds": round(time.perf_counter() - t0, 2)}
    for cb in callbacks:
        cb.on_epoch_end(t)


def train_batch(raw: dict, sampler: NegativeSampler, image_fn, device: str, epoch: int, step: int) -> TrainBatch:
    """One step's :class:`TrainBatch` from the loader's pairs ``raw`` and their negatives.

    Under torchrun ``raw`` holds this process's share of the global batch; the negatives are drawn
    for the global batch — the draw one process makes, from (seed, epoch, step) — and each process
    keeps those its pairs use (shared negatives: all of them; per pair: its pairs' rows).
    """
    users, items, shard = raw["users"], raw["items"], None
    if distributed.is_active():
        both = distributed.gather_interleaved(torch.cat([users[:, None], items], dim=1)).numpy()
        shard = BatchShard(both[:, 1:], distributed.own_rows(len(both)))
        negatives = sampler.sample(both[:, 1:], both[:, 0], epoch=epoch, step=step)
        if negatives.ndim == 3:
            negatives = negatives[shard.rows]
    else:
        negatives = sampler.sample(items.numpy(), users.numpy(), epoch=epoch, step=step)
    return TrainBatch(users.to(device), items.numpy(), negatives, image_fn, epoch, step, shard=shard)


def _resume_state(last_path: Path, cfg: TrainConfig, model: OutfitModel, device: str) -> TrainState:
    """The TrainState saved in ``last.pt`` (weights loaded into ``model``), or a fresh one."""
    if not last_path.exists():
        return TrainState()
    try:
        payload = load_checkpoint(last_path, map_location=device)
    except Exception as exc:  # a truncated or foreign file: say which and how to start over
        raise ValueError(f"cannot resume from {last_path}: the file is unreadable ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it (or pass "
                         f"overwrite=True) to start the stage over") from None
    # where it ran (the device) is no part of what it is: a run started on the CPU resumes anywhere
    saved, wanted = identity(TrainConfig.with_defaults(payload["config"].get("train", {}))), identity(cfg.to_dict())
    if not within_budget(saved, wanted):  # a larger epoch budget continues the same run
        diff = ", ".join(f"{k}={saved.get(k)!r} there, {wanted.get(k)!r} here"
                         for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k))
        raise ValueError(f"cannot resume from {last_path}: it was trained with another config ({diff}); "
                         f"delete it (or pass overwrite=True to the stage) to start over")
    train_state = payload.get("extra", {}).get("train_state")
    if train_state is None:
        raise ValueError(f"cannot resume from {last_path}: it holds weights but no training state (a "
                         f"checkpoint.pt copied over it?); delete it (or pass overwrite=True to the "
                         f"stage) to start over")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"cannot resume from {last_path}: its weights do not fit this model "
                         f"({str(exc).splitlines()[0]}); delete it (or pass overwrite=True to the "
                         f"stage) to start over") from None
    return TrainState.from_dict(train_state)

