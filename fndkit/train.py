"""One model-agnostic ``fit()`` for the teacher, the students and FND-CL.

Per step: a batch of B positive (user, outfit) pairs, N sampled negatives shared by every pair
(random mixtures, a ``hard_fraction`` of other users' positives), every unique item encoded once,
scores by cosine (eq. 9), then the configured loss: N-pair (eq. 10), BPR, or FND (eqs. 11–14) with
the frozen teacher's false-negative weights, plus ``lam`` × NT-Xent over two augmented views
(eqs. 17–19) when ``lam > 0``.

Around it: SGD with momentum and weight decay, linear learning-rate scaling with batch size,
ReduceLROnPlateau on validation AUC, early stopping, the best checkpoint by validation AUC, a
checkpoint every epoch (``resume=True`` continues from it), tqdm progress, callbacks, and a clear
error naming the step when the loss stops being finite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
from .evaluate import evaluate, image_fn_for
from .losses import (bpr_loss, false_negative_weights, fnd_loss, npair_loss, nt_xent_loss,
                     positive_boundary)
from .models.recommender import ItemFeatureCache, OutfitRecommender, outfit_vectors_cached
from .repro import resolve_device, run_metadata


class Callback:
    """Hooks into :func:`fit`; override what you need. ``state`` is a plain dict."""

    def on_batch_end(self, state: dict) -> None:  # noqa: D401 - hook
        pass

    def on_epoch_end(self, state: dict) -> None:
        pass


@dataclass
class TeacherSignal:
    """The frozen teacher, reduced to what FND needs (eqs. 11–12).

    Item features are cached once, so the teacher's score for any sampled negative costs a
    set-transformer pass, not a CNN pass. ``user_mean[i]`` is r̂_i, the teacher's mean score over
    user i's training positives (eq. 11): the user's *positive boundary*.
    """

    model: OutfitRecommender
    cache: ItemFeatureCache
    user_mean: torch.Tensor  # [n_users]

    @torch.no_grad()
    def negative_scores(self, users: torch.Tensor, negative_items: np.ndarray) -> torch.Tensor:
        """Teacher scores r̂_ijk of every batch user for every sampled negative: [B, N]."""
        outfit_vecs = outfit_vectors_cached(self.model, negative_items, self.cache)
        user_vecs = self.model.user_vectors(users.to(outfit_vecs.device))
        return self.model.score_matrix(user_vecs, outfit_vecs)


@torch.no_grad()
def prepare_teacher(teacher: OutfitRecommender, dataset: OutfitDataset, split: str = "train",
                    device: str = "cpu") -> TeacherSignal:
    """Freeze ``teacher``, cache its features for every item a training negative can hold, and
    compute r̂_i over each user's ``split`` positives."""
    teacher.eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    ids = dataset.outfits_of(split)
    items = dataset.outfit_items[ids]
    # every item a training negative can hold: random mixtures and hard negatives both come from
    # the items of this split's positives
    cache = ItemFeatureCache(teacher, items, image_fn_for(teacher, dataset, device))
    users = dataset.outfit_user[ids]
    outfit_vecs = outfit_vectors_cached(teacher, items, cache)
    scores = teacher.score(teacher.user_vectors(torch.as_tensor(users, device=outfit_vecs.device)),
                           outfit_vecs).double().cpu().numpy()
    user_mean = positive_boundary(scores, users, dataset.n_users)
    return TeacherSignal(teacher, cache, torch.as_tensor(user_mean, dtype=torch.float32))


def build_model(cfg: TrainConfig, dataset: OutfitDataset, weights: str | None = None) -> OutfitRecommender:
    """The recommender a TrainConfig describes, sized for ``dataset``'s user table."""
    model = OutfitRecommender(cfg.backbone, n_users=dataset.n_users, dim=cfg.dim, heads=cfg.heads,
                              weights=weights)
    if cfg.lam > 0:
        model.add_projection_head(cfg.projection_dim)
    return model


def fit(model: OutfitRecommender, dataset: OutfitDataset, cfg: TrainConfig, out_dir: str | Path,
        teacher: TeacherSignal | None = None, neighbours: np.ndarray | None = None,
        callbacks: Iterable[Callback] = (), resume: bool = False, progress: bool = True) -> dict:
    """Train ``model`` on ``cfg.train_split``; keep the best weights by validation AUC.

    Writes ``out_dir/last.pt`` every epoch (for ``resume``), ``out_dir/checkpoint.pt`` (best),
    ``out_dir/history.json``. Returns ``{"history", "best_epoch", "best_val_auc", "stopped_early",
    "epoch_seconds"}`` and leaves the best weights loaded in ``model``.
    """
    from .augment import make_views, parse_pair

    device = resolve_device(cfg.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.loss == "fnd" and teacher is None:
        raise ValueError("loss='fnd' needs a trained teacher: pass teacher=prepare_teacher(...) "
                         "(notebook 02_teacher trains one)")
    pair = parse_pair(cfg.augmentations) if cfg.lam > 0 else None
    if pair and "replace" in pair and neighbours is None:
        raise ValueError("augmentation 'replace' needs the autoencoder's neighbour table; run "
                         "notebooks/01_autoencoder.ipynb first or use augmentations='erase,erase'")
    if cfg.lam > 0 and getattr(model, "projection", None) is None:
        raise ValueError("lam > 0 needs a projection head: build the model with build_model(cfg, ...)")
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.scaled_lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    sampler = NegativeSampler(dataset, split=cfg.train_split, n_negatives=cfg.negatives,
                              hard_fraction=cfg.hard_fraction, seed=cfg.seed)
    image_fn = image_fn_for(model, dataset, device)
    val_protocol = "hard" if cfg.hard_fraction > 0 else "random"
    truth = dataset.truth
    history: list[dict] = []
    best_auc, best_epoch, start_epoch, bad_epochs = -np.inf, -1, 0, 0
    config_dict = {"model": model.config(), "train": cfg.to_dict(),
                   "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(),
                               "n_users": dataset.n_users, "image_size": dataset.image_size}}
    last_path, best_path = out_dir / "last.pt", out_dir / "checkpoint.pt"
    if resume and last_path.exists():
        state = load_checkpoint(last_path, map_location=device)
        if state["config"]["train"] != jsonable(cfg.to_dict()):
            raise ValueError(f"cannot resume from {last_path}: it was trained with another config; "
                             f"pass resume=False (and a fresh out_dir) to start over")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["extra"]["optimizer"])
        scheduler.load_state_dict(state["extra"]["scheduler"])
        history = state["extra"]["history"]
        best_auc, best_epoch = state["extra"]["best_auc"], state["extra"]["best_epoch"]
        bad_epochs, start_epoch = state["extra"]["bad_epochs"], state["extra"]["epoch"] + 1
    rng_views = np.random.default_rng([cfg.seed, 7])
    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        loader = make_loader(dataset, cfg.train_split, cfg.batch_size, shuffle=True,
                             seed=cfg.seed * 100003 + epoch, drop_last=True)
        n_steps = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "loss_cl": 0.0, "flagged": 0, "pairs": 0, "true_fn": 0, "flagged_true": 0}
        bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step, batch in enumerate(loader):
            if step >= n_steps:
                break
            users = batch["users"].to(device)
            pos_items = batch["items"].numpy()
            neg_items = sampler.sample(pos_items, batch["users"].numpy(), epoch=epoch, step=step)
            blocks = [pos_items, neg_items]
            if pair is not None:
                view1, view2, _ = make_views(torch.as_tensor(pos_items), pair, rng_views, neighbours=neighbours)
                blocks += [np.asarray(view1), np.asarray(view2)]
            all_items = torch.as_tensor(np.concatenate(blocks), device=device)
            outfit_vecs = model.outfit_vectors(all_items, image_fn)
            B, N = pos_items.shape[0], neg_items.shape[0]
            user_vecs = model.user_vectors(users)
            pos_scores = model.score(user_vecs, outfit_vecs[:B])
            neg_scores = model.score_matrix(user_vecs, outfit_vecs[B:B + N])
            if cfg.loss == "npair":
                loss = npair_loss(pos_scores, neg_scores, tau=cfg.tau)
            elif cfg.loss == "bpr":
                loss = bpr_loss(pos_scores, neg_scores, tau=cfg.tau)
            else:
                teacher_neg = teacher.negative_scores(users, neg_items).to(device)
                weights = false_negative_weights(teacher_neg, teacher.user_mean.to(device)[users], cfg.alpha)
                loss = fnd_loss(pos_scores, neg_scores, weights, tau=cfg.tau)
                flagged = (weights < 0).cpu().numpy()
                sums["flagged"] += int(flagged.sum())
                if truth is not None:
                    is_fn = truth.is_false_negative(np.repeat(batch["users"].numpy(), N),
                                                    np.tile(neg_items, (B, 1))).reshape(B, N)
                    sums["true_fn"] += int(is_fn.sum())
                    sums["flagged_true"] += int((is_fn & flagged).sum())
            sums["pairs"] += B * N
            if pair is not None:
                z = model.projection(outfit_vecs[B + N:])
                loss_cl = nt_xent_loss(z[:B], z[B:], tau=cfg.tau_cl)
                loss = loss + cfg.lam * loss_cl
                sums["loss_cl"] += loss_cl.item()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr={optimizer.param_groups[0]['lr']:.3g}, tau={cfg.tau}); lower lr or raise tau")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["loss"] += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            for cb in callbacks:
                cb.on_batch_end({"epoch": epoch, "step": step, "loss": loss.item()})
        bar.close()
        epoch_seconds = time.perf_counter() - t0
        val = evaluate(model, dataset, split=cfg.val_split, protocols=(val_protocol,), device=device)
        val_auc = val[val_protocol]["auc"]
        scheduler.step(val_auc)
        record = {"epoch": epoch + 1, "loss": sums["loss"] / max(n_steps, 1),
                  "val_auc": val_auc, "val_ndcg_lpae": val[val_protocol]["ndcg_lpae"],
                  "lr": optimizer.param_groups[0]["lr"], "seconds": round(epoch_seconds, 2)}
        if pair is not None:
            record["loss_cl"] = sums["loss_cl"] / max(n_steps, 1)
        if cfg.loss == "fnd":
            record["flagged_fraction"] = sums["flagged"] / max(sums["pairs"], 1)
            if truth is not None:
                record["flag_precision"] = sums["flagged_true"] / sums["flagged"] if sums["flagged"] else float("nan")
                record["flag_recall"] = sums["flagged_true"] / sums["true_fn"] if sums["true_fn"] else float("nan")
                record["true_fn_fraction"] = sums["true_fn"] / max(sums["pairs"], 1)
        history.append(record)
        improved = val_auc > best_auc
        if improved:
            best_auc, best_epoch, bad_epochs = val_auc, epoch + 1, 0
            save_checkpoint(best_path, state_dict=model.state_dict(), config=config_dict,
                            metrics={"val_auc": val_auc, "epoch": epoch + 1},
                            extra={"run": run_metadata(device)})
        else:
            bad_epochs += 1
        save_checkpoint(last_path, state_dict=model.state_dict(), config=config_dict,
                        metrics=record, extra={"optimizer": optimizer.state_dict(),
                                               "scheduler": scheduler.state_dict(),
                                               "history": history, "best_auc": best_auc,
                                               "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                                               "epoch": epoch})
        write_json(out_dir / "history.json", history)
        for cb in callbacks:
            cb.on_epoch_end({"epoch": epoch + 1, "record": record, "history": history})
        if progress:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            tqdm.write(shown)
        if bad_epochs >= cfg.patience:
            stopped_early = True
            break
    best = load_checkpoint(best_path, map_location=device)
    model.load_state_dict(best["state_dict"])
    seconds = [h["seconds"] for h in history]
    return {"history": history, "best_epoch": best_epoch, "best_val_auc": float(best_auc),
            "stopped_early": stopped_early, "epoch_seconds": float(np.mean(seconds)) if seconds else None}


def load_model(checkpoint_path: str | Path, device: str = "cpu") -> tuple[OutfitRecommender, dict]:
    """Rebuild a model from a checkpoint alone; returns (model, checkpoint payload)."""
    payload = load_checkpoint(checkpoint_path, map_location=device)
    model = OutfitRecommender.from_config(payload["config"]["model"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload


def check_teacher_compatible(payload: dict, dataset: OutfitDataset, dim: int, path: Any) -> None:
    """A teacher must come from this dataset and share the student's feature dimension d."""
    ds = payload["config"].get("dataset", {})
    if ds.get("fingerprint") != dataset.fingerprint():
        raise ValueError(f"teacher at {path} was trained on dataset {ds.get('name')!r} "
                         f"(fingerprint {ds.get('fingerprint')}), not on this run folder's "
                         f"{dataset.name!r} ({dataset.fingerprint()}); retrain it with 02_teacher "
                         f"on this run_dir or point teacher_dir at the right one")
    tdim = payload["config"]["model"].get("dim")
    if tdim != dim:
        raise ValueError(f"teacher at {path} has d={tdim} but the student has d={dim}; "
                         f"use dim={tdim} or retrain the teacher")
