"""One model-agnostic ``fit()`` for the teacher, the students, FND-CL and every baseline.

``fit()`` is a short loop: per step a batch of B positive (user, outfit) pairs and N sampled
negatives shared by them (random mixtures, a ``hard_fraction`` of other users' positives), then
``loss, stats = objective(model, batch)`` (see :mod:`fndkit.objectives`), backward, SGD step.
Everything around the loop is a callback that receives the :class:`Trainer`:

- :class:`Validate` — validation AUC each epoch (the record's ``val_auc``);
- :class:`PlateauLR` — ReduceLROnPlateau on validation AUC (LPAE's schedule);
- :class:`Checkpoint` — ``checkpoint.pt`` (best by validation AUC), ``last.pt`` (resume state),
  ``history.json``;
- :class:`EarlyStopping` — stop after ``patience`` epochs without a better validation AUC;
- :class:`ProgressLog` — one line per epoch.

Resume state is one :class:`TrainState` (epoch, best, history, optimizer, scheduler, objective and
RNG states) saved in ``last.pt``; ``fit(..., resume=True)`` continues from it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from .artifacts import jsonable, load_checkpoint, save_checkpoint, write_json
from .config import TrainConfig
from .data.datasets import make_loader
from .data.sampling import NegativeSampler
from .data.schema import OutfitDataset
from .evaluate import evaluate
from .models.contract import OutfitModel, make_image_fn
from .models.registry import build_model as _build_registered
from .models.registry import load_model  # noqa: F401 (re-exported: checkpoints of any model)
from .objectives import Objective, TrainBatch
from .repro import resolve_device, run_metadata


def build_model(cfg: TrainConfig, dataset: OutfitDataset, weights: str | None = None) -> OutfitModel:
    """The model a TrainConfig describes (``cfg.model``, a registry name), sized for ``dataset``."""
    model = _build_registered(cfg.model, backbone=cfg.backbone, n_users=dataset.n_users, dim=cfg.dim,
                              heads=cfg.heads, weights=weights)
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
    """``checkpoint.pt`` when validation AUC improves, ``last.pt`` and ``history.json`` every epoch."""

    def on_epoch_end(self, t):
        s = t.state
        if t.record["val_auc"] > s.best_metric:
            s.best_metric, s.best_epoch, s.bad_epochs = t.record["val_auc"], t.record["epoch"], 0
            save_checkpoint(t.out_dir / "checkpoint.pt", state_dict=t.model.state_dict(), config=t.config_dict,
                            metrics={"val_auc": t.record["val_auc"], "epoch": t.record["epoch"]},
                            extra={"run": run_metadata(t.device)})
        else:
            s.bad_epochs += 1
        s.history.append(dict(t.record))
        s.epoch = t.record["epoch"]
        s.optimizer, s.scheduler = t.optimizer.state_dict(), t.scheduler.state_dict()
        s.objective, s.torch_rng = jsonable(t.objective.state_dict()), torch.get_rng_state()
        save_checkpoint(t.out_dir / "last.pt", state_dict=t.model.state_dict(), config=t.config_dict,
                        metrics=t.record, extra={"train_state": s.to_dict()})
        write_json(t.out_dir / "history.json", s.history)


class EarlyStopping(Callback):
    def on_epoch_end(self, t):
        if t.state.bad_epochs >= t.cfg.patience:
            t.state.stopped_early = t.should_stop = True


class ProgressLog(Callback):
    def on_epoch_end(self, t):
        tqdm.write(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.record.items()))


def default_callbacks(progress: bool = True) -> list[Callback]:
    """Validate → PlateauLR → Checkpoint → EarlyStopping (→ ProgressLog): the order matters."""
    return [Validate(), PlateauLR(), Checkpoint(), EarlyStopping()] + ([ProgressLog()] if progress else [])


def fit(model: OutfitModel, dataset: OutfitDataset, cfg: TrainConfig, out_dir: str | Path,
        objective: Objective, callbacks: Iterable[Callback] = (), resume: bool = False,
        progress: bool = True) -> dict:
    """Train ``model`` on ``cfg.train_split`` with ``objective``; keep the best weights by
    validation AUC (left loaded in ``model``).

    Writes ``out_dir/checkpoint.pt`` (best), ``last.pt`` (resume), ``history.json``. Returns
    ``{"history", "best_epoch", "best_val_auc", "stopped_early", "epoch_seconds"}``.
    """
    device = resolve_device(cfg.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    objective.check_model(model)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.scaled_lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    config_dict = {"model": model.config(), "train": cfg.to_dict(),
                   "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(),
                               "n_users": dataset.n_users, "image_size": dataset.image_size}}
    state = _resume_state(out_dir / "last.pt", cfg, model, device) if resume else TrainState()
    if state.optimizer:
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        objective.load_state_dict(state.objective)
        if state.torch_rng is not None:
            torch.set_rng_state(state.torch_rng)
    t = Trainer(model, dataset, cfg, objective, out_dir, device, optimizer, scheduler, state, config_dict)
    callbacks = default_callbacks(progress) + list(callbacks)
    for cb in callbacks:
        cb.on_fit_start(t)
    sampler = NegativeSampler(dataset, split=cfg.train_split, n_negatives=cfg.negatives,
                              hard_fraction=cfg.hard_fraction, seed=cfg.seed)
    image_fn = make_image_fn(dataset.images, model.input_size, device)
    epoch = state.epoch
    while epoch < cfg.epochs and not state.stopped_early:
        model.train()
        loader = make_loader(dataset, cfg.train_split, cfg.batch_size, shuffle=True,
                             seed=cfg.seed * 100003 + epoch, drop_last=True)
        n_steps = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
        t0, sums = time.perf_counter(), {}
        bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step, raw in enumerate(loader):
            if step >= n_steps:
                break
            negatives = sampler.sample(raw["items"].numpy(), raw["users"].numpy(), epoch=epoch, step=step)
            batch = TrainBatch(raw["users"].to(device), raw["items"].numpy(), negatives, image_fn, epoch, step)
            loss, stats = objective(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr={optimizer.param_groups[0]['lr']:.3g}, tau={cfg.tau}); lower lr or raise tau")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v
            t.step, t.loss = step, loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{t.loss:.3f}")
            for cb in callbacks:
                cb.on_batch_end(t)
        bar.close()
        t.record = {"epoch": epoch + 1, **objective.summarize(sums, n_steps),
                    "seconds": round(time.perf_counter() - t0, 2)}
        for cb in callbacks:
            cb.on_epoch_end(t)
        epoch += 1
        if t.should_stop:
            break
    best = load_checkpoint(out_dir / "checkpoint.pt", map_location=device)
    model.load_state_dict(best["state_dict"])
    seconds = [h["seconds"] for h in state.history]
    return {"history": state.history, "best_epoch": state.best_epoch, "best_val_auc": float(state.best_metric),
            "stopped_early": state.stopped_early, "epoch_seconds": float(np.mean(seconds)) if seconds else None}


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
    if payload["config"]["train"] != jsonable(cfg.to_dict()):
        raise ValueError(f"cannot resume from {last_path}: it was trained with another config; "
                         f"pass resume=False (and a fresh out_dir) to start over")
    model.load_state_dict(payload["state_dict"])
    return TrainState.from_dict(payload["extra"]["train_state"])

