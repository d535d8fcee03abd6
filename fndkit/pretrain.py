"""Auxiliary pre-training of an item CNN on a task the synthetic generator knows: classify each
item's visible attributes (colour, pattern, pattern frequency, category × shape) from its picture.

It plays the part ImageNet pre-training plays in the paper (§4.1.4: the AlexNet teacher starts
from ImageNet weights): the teacher's backbone learns to *see* before it learns tastes. The
attribute accuracies on held-out items are also the benchmark's probe of what a backbone can see
(``python -m fndkit pretrain --backbone cnn-tiny cnn-small --json probe.json``): a teacher can
only know more than its student when it reads the attributes better.

The teacher pre-trains on items the generator draws with other seeds (:func:`auxiliary_items`,
never the benchmark's own pictures), and its accuracy is measured on the benchmark's items. The
saved file holds the backbone's convolutional ``features.*`` tensors only, so a training stage
starts from it with ``weights=<file>`` (:func:`fndkit.models.backbones.load_weights`) and a fresh
head.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .artifacts import atomic_path
from .data.schema import DatasetError, OutfitDataset
from .models.backbones import build_backbone, images_to_tensor
from .config import check_int
from .repro import resolve_device, seed_everything
from .rundir import RunFolder, StageError


def attribute_targets(ds: OutfitDataset) -> dict[str, np.ndarray]:
    """Class labels per item (int64 [I], -1 = no label) of every attribute the generator drew.

    ``shape`` is combined with the category (a t-shirt and a sneaker are different classes);
    ``frequency`` exists for patterned items only (a solid item, pattern 0, shows none)."""
    attrs = ds.item_attributes or {}
    if not {"colour", "pattern", "shape"} <= set(attrs):
        raise DatasetError(f"dataset {ds.name!r} has no generator attributes (colour, pattern, shape); "
                           f"auxiliary pre-training needs the synthetic benchmark")
    n_shapes = 4 if "frequency" in attrs else 3   # rich / simple shapes per category
    out = {"colour": attrs["colour"].astype(np.int64), "pattern": attrs["pattern"].astype(np.int64),
           "shape": ds.item_category.astype(np.int64) * n_shapes + attrs["shape"].astype(np.int64)}
    if "frequency" in attrs:
        out["frequency"] = np.where(attrs["pattern"] == 0, -1, attrs["frequency"]).astype(np.int64)
    return out


@dataclass
class ItemSet:
    """Pictures and attribute labels: ``images`` uint8 [N, S, S, 3], ``targets`` {attribute: int64 [N]}."""

    images: np.ndarray
    targets: dict[str, np.ndarray]

    @classmethod
    def of(cls, ds: OutfitDataset, items: np.ndarray | None = None) -> "ItemSet":
        items = np.arange(ds.n_items) if items is None else np.asarray(items, dtype=np.int64)
        return cls(np.asarray(ds.images.get(items)), {k: v[items] for k, v in attribute_targets(ds).items()})


def auxiliary_items(ds: OutfitDataset, n_sets: int = 4, seed: int = 10_000) -> ItemSet:
    """Items drawn by the generator with other seeds, never the benchmark's own: the auxiliary
    ("ImageNet") set. ``n_sets`` datasets of ``ds``'s scale, appearance and image size (seeds
    ``seed``, ``seed + 1`` …); their styles and users are thrown away, only pictures and attribute
    labels are kept."""
    from .data.synthetic import make_dataset

    meta = ds.meta
    if meta.get("source") != "synthetic":
        raise DatasetError(f"dataset {ds.name!r} is not the synthetic benchmark: no generator to draw "
                           f"auxiliary items from")
    sets = [ItemSet.of(make_dataset(meta["scale"], seed=seed + j, image_size=int(meta["image_size"]),
                                    appearance=meta.get("generator", {}).get("appearance", "simple")))
            for j in range(n_sets)]
    return ItemSet(np.concatenate([s.images for s in sets]),
                   {k: np.concatenate([s.targets[k] for s in sets]) for k in sets[0].targets})


class AttributeClassifier(nn.Module):
    """A backbone and one linear head per attribute."""

    def __init__(self, backbone: str, n_classes: dict[str, int], dim: int = 128):
        super().__init__()
        self.backbone = build_backbone(backbone, dim)
        self.heads = nn.ModuleDict({k: nn.Linear(dim, n) for k, n in n_classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = F.relu(self.backbone(x))
        return {k: h(f) for k, h in self.heads.items()}


@torch.no_grad()
def attribute_accuracy(model: AttributeClassifier, items: ItemSet, batch_size: int = 256,
                       device: str = "cpu") -> dict:
    """Accuracy per attribute on ``items`` (items without a label for an attribute are skipped)."""
    model.eval()
    right = {k: 0 for k in items.targets}
    seen = {k: 0 for k in items.targets}
    size = model.backbone.input_size
    for lo in range(0, len(items.images), batch_size):
        out = model(images_to_tensor(items.images[lo:lo + batch_size], size, device))
        for k, logits in out.items():
            y = torch.as_tensor(items.targets[k][lo:lo + batch_size], device=device)
            keep = y >= 0
            right[k] += int((logits.argmax(1)[keep] == y[keep]).sum())
            seen[k] += int(keep.sum())
    return {k: right[k] / max(seen[k], 1) for k in items.targets}


def pretrain_backbone(train: ItemSet, held_out: ItemSet, backbone: str, epochs: int = 10, dim: int = 128,
                      batch_size: int = 64, lr: float = 0.05, seed: int = 0, device: str = "cpu",
                      progress: bool = True) -> tuple[AttributeClassifier, list[dict]]:
    """Train ``backbone`` to classify the attributes of ``train`` (SGD, momentum 0.9, one-cycle
    schedule); returns the classifier and its history: per epoch the mean loss, seconds and the
    accuracy per attribute on ``held_out`` (:func:`attribute_accuracy`)."""
    seed_everything(seed)
    n_classes = {k: int(max(train.targets[k].max(), held_out.targets[k].max())) + 1 for k in train.targets}
    model = AttributeClassifier(backbone, n_classes, dim).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-5)
    per_epoch = max(1, len(train.images) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * per_epoch, pct_start=0.15)
    rng = np.random.default_rng(seed)
    size = model.backbone.input_size
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        start, losses = time.perf_counter(), []
        order = rng.permutation(len(train.images))
        for b in range(per_epoch):
            ids = np.sort(order[b * batch_size:(b + 1) * batch_size])
            out = model(images_to_tensor(train.images[ids], size, device))
            loss = sum(F.cross_entropy(logits, torch.as_tensor(train.targets[k][ids], device=device),
                                       ignore_index=-1) for k, logits in out.items())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - start,
               "held_out_accuracy": attribute_accuracy(model, held_out, device=device)}
        history.append(row)
        if progress:
            acc = " ".join(f"{k} {v:.3f}" for k, v in row["held_out_accuracy"].items())
            print(f"[pretrain {backbone}] epoch {epoch}/{epochs} loss {row['loss']:.3f} "
                  f"({row['seconds']:.0f} s) held-out accuracy: {acc}", flush=True)
    return model, history


def save_backbone_features(model: AttributeClassifier, path: str | Path) -> Path:
    """Write the backbone's convolutional tensors (``features.*``) as a state-dict file (atomically)."""
    state = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items() if k.startswith("features.")}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


# Errors whose message says what to do (the command line prints them as one line).
USER_ERRORS = (DatasetError, StageError, FileNotFoundError)


def probe(run_dir: str | Path, backbones: list[str], epochs: int = 10, aux_sets: int = 4, seed: int = 0,
          device: str = "auto", out: str | Path | None = None, json_path: str | Path | None = None,
          progress: bool = True) -> dict:
    """Pre-train each of ``backbones`` on the attributes (``python -m fndkit pretrain``): on
    ``aux_sets`` generated item sets of other seeds, held out the benchmark's own items (which the
    teacher later ranks); ``aux_sets=0``: on the benchmark's trained-pool items, held out its cold
    pool. ``out``: the first backbone's ``features.*`` tensors; ``json_path``: every history.
    Returns backbone -> history (:func:`pretrain_backbone`)."""
    check_int("epochs", epochs, 1)
    check_int("aux_sets", aux_sets, 0, " (0: the benchmark's own trained-pool items)")
    device = resolve_device(device)
    ds = RunFolder(run_dir).dataset()
    if aux_sets > 0:
        train, held = auxiliary_items(ds, aux_sets, seed=10_000 + 100 * seed), ItemSet.of(ds)
    else:
        cold = ds.split_mask("cold")
        own, other = ds.outfit_items[~cold], ds.outfit_items[cold]
        train, held = ItemSet.of(ds, np.unique(own[own >= 0])), ItemSet.of(ds, np.unique(other[other >= 0]))
    report = {}
    for i, name in enumerate(backbones):
        model, history = pretrain_backbone(train, held, name, epochs=epochs, seed=seed, device=device,
                                           progress=progress)
        report[name] = history
        if out and i == 0:
            save_backbone_features(model, out)
    if json_path:
        with atomic_path(json_path) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=1))
    return report
