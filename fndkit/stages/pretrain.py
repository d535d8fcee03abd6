"""The teacher's pre-training on the built-in benchmark's item attributes (the analogue of the
paper's ImageNet weights, :mod:`fndkit.pretrain`) as a stage: ``Params`` and ``execute``.

It has no notebook: the distillation plan (:mod:`fndkit.plans.distill`) runs it before the teacher,
which then trains with ``weights=`` :func:`weights_path`. A finished pre-training (its weights and
report both present) is reused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..artifacts import read_json, write_json
from ..pretrain import ItemSet, auxiliary_items, pretrain_backbone, save_backbone_features
from ..repro import resolve_device
from ..rundir import RunFolder
from .params import StageParams

PRETRAIN = "pretrain"


def weights_path(run_dir: str | os.PathLike, backbone: str) -> Path:
    """Where the pre-trained convolutional weights of ``backbone`` go in a run folder."""
    return RunFolder(run_dir).root / PRETRAIN / f"{backbone}.pt"


@dataclass(frozen=True)
class Params(StageParams):
    """The pre-training's parameters (the preset's ``teacher_pretrain``; no notebook)."""

    kind: ClassVar[str] = "pretrain"
    notebook: ClassVar[str] = ""

    run_dir: str = "outputs/demo"
    backbone: str = "cnn-small"
    aux_sets: int = 4
    epochs: int = 8
    seed: int = 0
    device: str = "auto"


def execute(params: Params, progress: bool = True) -> dict:
    """Pre-train ``params.backbone`` on the attributes of generated items of other seeds, held out
    on the run folder's own items; write ``pretrain/<backbone>.pt`` and its report; return it."""
    out = weights_path(params.run_dir, params.backbone)
    report = out.with_suffix(".json")
    if out.exists() and report.exists():
        return {"weights": str(out), **read_json(report)}
    ds = RunFolder(params.run_dir).dataset()
    model, history = pretrain_backbone(auxiliary_items(ds, params.aux_sets, seed=10_000 + 100 * params.seed),
                                       ItemSet.of(ds), params.backbone, epochs=params.epochs, seed=params.seed,
                                       device=resolve_device(params.device), progress=progress)
    save_backbone_features(model, out)
    summary = {"backbone": params.backbone, "aux_sets": params.aux_sets, "epochs": params.epochs,
               "held_out_accuracy": history[-1]["held_out_accuracy"],
               "seconds": float(sum(h["seconds"] for h in history))}
    write_json(report, summary)
    return {"weights": str(out), **summary}
