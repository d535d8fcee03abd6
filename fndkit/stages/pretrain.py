"""The teacher's pre-training on the built-in benchmark's item attributes (the analogue of the
paper's ImageNet weights, :mod:`fndkit.pretrain`) as a stage: ``Params`` and ``execute``.

It has no notebook: the distillation plan (:mod:`fndkit.plans.distill`) runs it before the teacher,
which then trains with ``weights=`` :func:`weights_path`. It writes under the claim of its folder
(one writer, :meth:`fndkit.rundir.RunFolder.claimed`); a finished pre-training (its weights and
report both present and readable) is reused when its report records the same configuration
(backbone, auxiliary sets, epochs, seed, dataset), and refused by name otherwise: the teacher
trained from the old weights would no longer match them. The device is not part of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..artifacts import write_json
from ..config import ConfigError, check_int
from ..pretrain import ItemSet, auxiliary_items, pretrain_backbone, save_backbone_features
from ..repro import resolve_device
from ..rundir import PRETRAIN, RunFolder, StageError
from .params import StageParams

# What a pre-training is (its report's keys that must match for reuse); the device is not.
IDENTITY = ("backbone", "aux_sets", "epochs", "seed", "dataset_fingerprint")


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

    def __post_init__(self):
        super().__post_init__()
        check_int("aux_sets", self.aux_sets, 1)
        check_int("epochs", self.epochs, 1, " (pre-training epochs)")
        check_int("seed", self.seed, 0)
        if not isinstance(self.backbone, str) or not self.backbone.strip():
            raise ConfigError(f"backbone={self.backbone!r} must name a backbone, e.g. 'cnn-small'")


def execute(params: Params, progress: bool = True) -> dict:
    """Pre-train ``params.backbone`` on the attributes of generated items of other seeds, held out
    on the run folder's own items; write ``pretrain/<backbone>.pt`` and its report; return it."""
    run = RunFolder(params.run_dir)
    ds = run.dataset()
    out = weights_path(params.run_dir, params.backbone)
    report = out.with_suffix(".json")
    asked = {"backbone": params.backbone, "aux_sets": params.aux_sets, "epochs": params.epochs,
             "seed": params.seed, "dataset_fingerprint": ds.fingerprint()}
    with run.claimed(PRETRAIN):
        if report.exists() and not run.check_loads(out):
            done = run.read_json(report)
            # a report written before seed and dataset were recorded matches on what it has
            if all(done.get(k, asked[k]) == asked[k] for k in IDENTITY):
                print(f"{out} already holds this pre-training; reusing it")
                return {"weights": str(out), **done}
            raise StageError(f"{out} was pre-trained with {_differs(done, asked)}; a teacher may have "
                             f"started from it, so it is not replaced: delete {out.parent} (and retrain the "
                             f"teacher) or pass another run_dir")
        model, history = pretrain_backbone(auxiliary_items(ds, params.aux_sets, seed=10_000 + 100 * params.seed),
                                           ItemSet.of(ds), params.backbone, epochs=params.epochs, seed=params.seed,
                                           device=resolve_device(params.device), progress=progress)
        save_backbone_features(model, out)
        summary = {**asked, "held_out_accuracy": history[-1]["held_out_accuracy"],
                   "seconds": float(sum(h["seconds"] for h in history))}
        write_json(report, summary)
    return {"weights": str(out), **summary}


def _differs(done: dict, asked: dict) -> str:
    return ", ".join(f"{k}={done.get(k)!r} (asked: {asked[k]!r})" for k in IDENTITY if done.get(k) != asked[k])
