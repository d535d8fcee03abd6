"""The distillation evidence on the rich benchmark as plans: does a student learn what its teacher
knows, and which distillation passes it on over the sampled candidates?

``python -m fndkit distill --root outputs/distill --seeds 0 1 2`` runs, per seed, in one run folder
``<root>/seed<s>`` (the data stage with ``appearance="rich"``):

* the teacher: its backbone pre-trained once on the attributes of generated items
  (:mod:`fndkit.pretrain`, the preset's ``teacher_pretrain``; the analogue of the one ImageNet model
  every seed of the paper starts from, so it is trained once, in the first seed's folder, and every
  seed's teacher starts from it), then trained with N-pair;
* the XS student with N-pair (the reference), and with each distillation method: FND and the
  distillation baselines (:mod:`fndkit.distillation`), each at the point its search chose on the
  search seed's validation half (:mod:`fndkit.plans.search`; never the test AUC);
* ``full=True`` adds Fig. 6's sizes (S, M and a teacher-sized student from scratch, N-pair and FND),
  the false-negative lab's XS rows (oracle-drop / oracle-pull: a perfect flagger; fnd-sign /
  fnd-magnitude: ablations of FND's weight) and FND-CL (needs the autoencoder).

The reference for every gain is XS N-pair in the same run folder; the teacher's margin over it is
what a distillation could transfer (``share`` in the report). Two plans, one executor: the search
(:func:`search_plan`), then the chosen points over seeds (:func:`plan`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..config import SCALE_PRESETS
from ..distillation import METHODS as DISTILLATION
from ..stages import naming
from ..stages.pretrain import weights_path
from . import search
from .execute import Job, params_for

LAB_LOSSES = ("oracle-drop", "oracle-pull", "fnd-sign", "fnd-magnitude")
PAIRS = ("erase,replace", "erase,erase")
# The verdict plan (``python -m fndkit distill --verdict``): 10 seeds on the 2-core CPU box. One
# dataset, one pre-training and one teacher (the first seed's) serve every seed: the seeds
# replicate the students' training, the variance a claim about a distillation method must beat;
# each method is searched once, on the first seed, over a smaller grid than its full space.
VERDICT_SEEDS = tuple(range(10))
VERDICT_SPACES = {"fnd": {"alpha": [1.25, 2.0, 3.0]},
                  "kd": {"kd_weight": [0.5, 0.75], "kd_temperature": [2.0, 4.0]},
                  "margin-mse": {"kd_weight": [0.03, 0.1, 0.3]},
                  "rd": {"rd_k": [3, 5], "kd_weight": [0.3, 1.0]},
                  "rrd": {"kd_temperature": [3.0, 10.0], "kd_weight": [0.3, 1.0]},
                  "hint": {"kd_weight": [0.3, 1.0]},
                  "kd-fnd": {"kd_weight": [0.5, 0.75], "kd_temperature": [2.0, 4.0]}}


def distillation_methods() -> list[str]:
    """FND and every distillation baseline of :mod:`fndkit.distillation` (KD, margin-MSE, RD, RRD,
    the latent hint, KD + FND)."""
    return ["fnd", *DISTILLATION]


class Distill:
    """One distillation plan's settings: where, which seeds, the scale, which methods."""

    def __init__(self, root: str | Path, seeds: Iterable[int] = (0,), scale: str = "demo", image_size: int = 32,
                 device: str = "auto", epochs: int | None = None, methods: Iterable[str] | None = None,
                 full: bool = False, search_seed: int | None = None, values: dict | None = None,
                 shared: bool = False):
        self.root, self.seeds = Path(root), tuple(int(s) for s in seeds)
        self.scale, self.image_size, self.device, self.epochs = scale, image_size, device, epochs
        self.methods = list(methods) if methods is not None else distillation_methods()
        self.full = full
        self.search_seed = self.seeds[0] if search_seed is None else search_seed
        self.values = values or {}
        self.shared = shared   # one dataset, pre-training and teacher for every seed (the verdict plan)
        self.preset = SCALE_PRESETS[f"{scale}-rich"]
        self.sizes = self.preset["students"]

    def identity(self) -> dict:
        return {"folder": str(self.root), "scale": self.scale, "image_size": self.image_size,
                "epochs": self.epochs, "shared": self.shared}

    def folder(self, seed: int) -> str:
        return str(naming.seed_folder(self.root, self.seeds[0] if self.shared else seed))

    def name(self, size: str, method: str, seed: int) -> str:
        stage = naming.sized(size, method)
        return naming.replicate(stage, seed) if self.shared else stage

    def common(self) -> dict:
        return {"device": self.device, **({"epochs": self.epochs} if self.epochs else {})}

    def student(self, seed: int, size: str, method: str, experiment: str = "distill", **values) -> Job:
        loss = "fnd" if method == "fnd-cl" else method
        kind = "contrastive" if method == "fnd-cl" else "student"
        extra = {"lam": 0.2} if method == "fnd-cl" else {}
        params = params_for(kind, run_dir=self.folder(seed), seed=seed, loss=loss, out_name=self.name(size, method, seed),
                            backbone=self.sizes.get(size, self.preset["teacher_backbone"]), **self.common(),
                            **extra, **values)
        return Job(params, method=method, experiment=experiment, shown={"size": size})

    def pretrain_job(self) -> Job | None:
        pre = self.preset.get("teacher_pretrain")
        if not pre:
            return None
        s = self.seeds[0]
        return Job(params_for("pretrain", run_dir=self.folder(s), backbone=self.preset["teacher_backbone"],
                              aux_sets=pre["aux_sets"], epochs=self.epochs or pre["epochs"], seed=s,
                              device=self.device), experiment="distill")

    def prerequisites(self, seed: int) -> list[Job]:
        if self.shared and seed != self.seeds[0]:
            return []
        jobs = [Job(params_for("data", run_dir=self.folder(seed), scale=self.scale, seed=seed,
                               image_size=self.image_size, appearance="rich"), experiment="distill")]
        pre = self.pretrain_job()
        teacher = {"weights": str(weights_path(pre.run_dir, pre.params.backbone))} if pre else {}
        if pre and seed == self.seeds[0]:
            jobs.append(pre)
        jobs.append(Job(params_for("teacher", run_dir=self.folder(seed), seed=seed, **self.common(), **teacher),
                        method="teacher", experiment="distill"))
        if self.full:
            jobs.append(Job(params_for("autoencoder", run_dir=self.folder(seed), seed=seed, device=self.device,
                                       **({"epochs": self.epochs} if self.epochs else {})), experiment="distill"))
        return jobs

    def searched(self) -> list[str]:
        return [m for m in self.methods if search.space(m)]

    def search_plan(self) -> tuple[list[Job], dict[str, list[Job]]]:
        """The search seed's prerequisites and every method's trials (XS student)."""
        trials = {m: search.trials(m, self.student(self.search_seed, "XS", m),
                                   search.restrict(m, self.values.get(m) or (VERDICT_SPACES.get(m) if self.shared
                                                                             else None))) for m in self.searched()}
        return self.prerequisites(self.search_seed) + [t for ts in trials.values() for t in ts], trials

    def plan(self, chosen: dict[str, dict]) -> list[Job]:
        """Every seed's jobs at the chosen points (``chosen``: method -> {values: …})."""
        values = {m: dict(c["values"]) for m, c in chosen.items()}
        jobs: list[Job] = []
        for s in self.seeds:
            jobs += self.prerequisites(s)
            jobs.append(self.student(s, "XS", "npair"))
            # KD + FND distils at FND's chosen α (its search varies only the KD term, at the paper's α)
            fnd_alpha = {"alpha": values["fnd"]["alpha"]} if "alpha" in values.get("fnd", {}) else {}
            jobs += [self.student(s, "XS", m, **{**(fnd_alpha if m == "kd-fnd" else {}), **values.get(m, {})})
                     for m in self.methods]
            if self.full:
                fnd = values.get("fnd", {})
                for size in ("S", "M"):
                    jobs += [self.student(s, size, "npair", "fig6"), self.student(s, size, "fnd", "fig6", **fnd)]
                if self.preset["teacher_backbone"] not in self.sizes.values():
                    jobs += [self.student(s, "T", "npair", "fig6"), self.student(s, "T", "fnd", "fig6", **fnd)]
                jobs += [self.student(s, "XS", loss, "lab", **({"alpha": fnd["alpha"]} if loss == "fnd-magnitude"
                                                              and "alpha" in fnd else {})) for loss in LAB_LOSSES]
                jobs += [Job(self.student(s, "XS", "fnd-cl", "fnd-cl", augmentations=pair, **fnd).params.replace(
                    out_name=naming.variant(self.name("XS", "fnd-cl", s), augmentations=pair)),
                    method="fnd-cl", experiment="fnd-cl", shown={"size": "XS", "augmentations": pair})
                    for pair in PAIRS]
        return jobs
