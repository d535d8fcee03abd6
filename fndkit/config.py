"""Frozen per-stage configs: validated at the boundary, saved as JSON beside every checkpoint.

Notebook parameters map one-to-one onto fields. ``None`` in a training field means "the preset
for the run folder's scale" (see :data:`SCALE_PRESETS`), so ``papermill -p epochs 3`` overrides one
thing and leaves the rest to the preset.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from .artifacts import jsonable

SCALES = ("tiny", "demo", "polyvore630", "polyvore519")
APPEARANCES = ("simple", "rich")   # fndkit.data.appearance.APPEARANCES

# The paper's per-dataset hyper-parameters (§4.1.3, §4.5, §4.6), keyed by outfit layout: fixed-size
# outfits are Polyvore-630's kind, variable-size ones (one or two tops) Polyvore-519's.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "fixed": {"alpha": 1.25, "augmentations": "erase,replace"},     # Polyvore-630
    "variable": {"alpha": 1.5, "augmentations": "erase,erase"},     # Polyvore-519
}
DEFAULT_ALPHA = PAPER_DEFAULTS["fixed"]["alpha"]
DEFAULT_AUGMENTATIONS = PAPER_DEFAULTS["fixed"]["augmentations"]

# Training presets per data scale: CPU-sized for tiny/demo, the paper's budget for the large ones.
# "epochs" / "teacher_epochs" are budgets: early stopping ("patience" epochs without a better
# validation AUC) ends each run at its plateau. Demo: FND only helps when the teacher is clearly
# stronger than a converged student. Measured at convergence (demo scale, seeds 0-2, one H200, test
# AUC random / hard negatives): cnn-large teacher 0.915 / 0.838 (best epochs 21-32), cnn-small
# teacher 0.928 / 0.860 (best epochs 14-23, half cnn-large's step time on CPU), cnn-tiny students
# (8-16-32-32, a third of cnn-small's step time) N-pair 0.919 / 0.844, FND α 1.25 0.905 / 0.855,
# FND-CL 0.907 / 0.856 (best epochs 17-30). So the demo teaches cnn-tiny with a cnn-small teacher.
# tiny keeps its older pair: the notebook chain test pins its seeded metrics.
# Demo patience 8 (was 4), measured (issue 25; demo, seed 0, one run with patience 12 whose
# trajectory equals patience 4's until 4 has stopped; 2-core CPU, shared): patience 4 stopped the
# cnn-small teacher at epoch 18 (best 14, validation AUC 0.9230, test 0.9281 / hard 0.8648) while
# it kept improving (epoch 24: 0.9302, test 0.9328 / 0.8772; a 4-epoch plateau, epochs 15-18,
# preceded better epochs); the FND student was
# unaffected (best epoch 25, validation 0.9288, test 0.9136 either way; patience 4 stops at 29).
# 8 is twice that plateau; within the 30-epoch budget it lets the teacher converge.
# "chain_epochs": the demo chain's (``make demo``) budget for its teacher and students — a tour of
# the workbench in under 10 minutes on 2 cores, not evidence (the verdict plans train to the plateau
# with the budgets above). Measured (issue 30, 2-core box, fresh clone): with 15 epochs `make demo`
# took 646 s (teacher 15 × 12.4 s), so 10. Replayed from the 30-epoch runs' validation curves (demo,
# seed 0; scripts/convergence_cost.py): at 10 epochs the teacher's best validation AUC is 0.898
# (0.930 at its plateau), N-pair 0.914 (0.935), FND 0.887 (0.912), FND-CL 0.899 (0.929).
# The budgets of the paper's sweep and the false-negative lab, per scale (one place for them):
# "converged_epochs" — large enough that early stopping ends every run first (students and the
# lab's teachers); "fixed_epochs" — the lab's fixed-budget result of the same run;
# "snapshot_epochs" — the lab teacher's kept snapshots (its strength against epochs);
# "cold_repetitions" — Table 3's repetitions.
_SWEEP = {"converged_epochs": 60, "fixed_epochs": 12, "snapshot_epochs": [1, 2, 5, 10, 20, 30],
          "cold_repetitions": 10}
_SWEEP_TINY = {"converged_epochs": 2, "fixed_epochs": 1, "snapshot_epochs": [1, 2], "cold_repetitions": 2}
SCALE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"epochs": 2, "teacher_epochs": 2, "teacher_backbone": "cnn-large", "student_backbone": "cnn-small",
             "patience": 2, "lr_patience": 1, **_SWEEP_TINY},
    "demo": {"epochs": 30, "teacher_epochs": 30, "teacher_backbone": "cnn-small", "student_backbone": "cnn-tiny",
             "patience": 8, "lr_patience": 1, "lr_floor": 1 / 16, "chain_epochs": 10, **_SWEEP},
    "polyvore630": {"epochs": 30, "teacher_epochs": 30, "teacher_backbone": "cnn-large", "student_backbone": "cnn-small",
                    "patience": 5, "lr_patience": 2, **_SWEEP},
    "polyvore519": {"epochs": 30, "teacher_epochs": 30, "teacher_backbone": "cnn-large", "student_backbone": "cnn-small",
                    "patience": 5, "lr_patience": 2, **_SWEEP},
    # The distillation benchmark (DataConfig appearance="rich", fndkit/data/appearance.py): items
    # whose attributes must be seen. The teacher's backbone is first pre-trained on the attributes
    # of generated items of other seeds ("teacher_pretrain": python -m fndkit.pretrain, then the
    # teacher trains with weights=<that file>), the analogue of the paper's ImageNet teacher; the
    # students start from scratch. "students": Fig. 6's sizes on this preset (experiments.py's
    # student_families would otherwise rank every cnn-* backbone). Measured: see README.
    "tiny-rich": {"epochs": 2, "teacher_epochs": 2, "teacher_backbone": "cnn-small", "student_backbone": "cnn-tiny",
                  "patience": 2, "lr_patience": 1, **_SWEEP_TINY,
                  "teacher_pretrain": {"task": "attributes", "aux_sets": 1, "epochs": 1},
                  "students": {"XS": "cnn-tiny", "S": "cnn-small", "M": "cnn-large"}},
    "demo-rich": {"epochs": 40, "teacher_epochs": 40, "teacher_backbone": "cnn-small", "student_backbone": "cnn-tiny",
                  "patience": 4, "lr_patience": 1, **_SWEEP,
                  "teacher_pretrain": {"task": "attributes", "aux_sets": 4, "epochs": 8},
                  "students": {"XS": "cnn-tiny", "S": "cnn-small", "M": "cnn-large"}},
    # real Polyvore-U at 224 px: the paper's AlexNet pair, fine-tuned from ImageNet (§4.1.4)
    "real": {"epochs": 30, "teacher_epochs": 30, "teacher_backbone": "alexnet-large", "student_backbone": "alexnet-xs",
             "patience": 5, "lr_patience": 2, "weights": "imagenet", **_SWEEP},
}

# Initial backbone weights: a notebook's ``weights = "auto"`` takes the preset's ("weights" above,
# None when absent) for the AlexNet backbones, the only ones with ImageNet weights.
WEIGHTS_AUTO = "auto"
WEIGHTS_NONE = ("none", "scratch", "")
DATA_FORMATS = ("auto", "polyvore", "folder")
DECODE_MODES = ("once", "on_the_fly")   # DataConfig.decode (fndkit.data.decode)


def preset_weights(preset: dict, backbone: str, weights: Any = WEIGHTS_AUTO) -> str | None:
    """The initial weights a training stage asks for: ``"auto"`` -> the preset's (for an
    ``alexnet-*`` backbone; None otherwise); ``None`` / ``"none"`` -> None (random
    initialisation); anything else (``"imagenet"``, a path) as given."""
    if isinstance(weights, str) and weights.strip().lower() == WEIGHTS_AUTO:
        return preset.get("weights") if str(backbone).startswith("alexnet") else None
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in WEIGHTS_NONE):
        return None
    return weights


# How a training step's negatives are drawn (TrainConfig.negatives; see fndkit.data.sampling).
NEGATIVE_MODES = ("shared", "per_pair")


class ConfigError(ValueError):
    """A parameter has a bad value; the message names it, the value and the fix."""


def check_int(name: str, value: Any, low: int | None = None, hint: str = "",
              error: type[Exception] = None) -> int:
    """``value`` as an int, or one clear error naming ``name``, the value and the bound: the one
    integer check every boundary of the library uses (a bool is not an integer here)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise (error or ConfigError)(f"{name}={value!r} must be an integer{bound}{hint}")
    return int(value)


def check_finite(name: str, value: Any, error: type[Exception] = None) -> Any:
    """``value`` unchanged unless it is a non-finite number (``inf``, ``-inf``, ``nan``; also inside
    a list or tuple): then one clear error naming ``name`` and the value. The one finite check
    every float parameter of the library goes through (configs and each stage's ``Params``)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral)) and not math.isfinite(v):
            raise (error or ConfigError)(f"{name}={value!r} must be a finite number ({v!r} is not); "
                                         f"pass an ordinary value such as the default")
    return value


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class _Base:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        _check(not unknown, f"{cls.__name__}: unknown fields {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def with_defaults(cls, d: dict) -> dict:
        """``d`` (a saved ``to_dict()``) with the fields it lacks at their defaults, so that a
        config saved before a field existed compares equal to one leaving it at its default."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING}
        return {**defaults, **d}


@dataclass(frozen=True)
class TrainConfig(_Base):
    """Everything :func:`fndkit.train.fit` needs. Defaults follow the paper and LPAE's code.

    ``model`` (a :mod:`fndkit.models.registry` name), ``backbone`` and ``loss`` (an objective
    name) are checked against their registries where the model and objective are built.
    """

    model: str = "recommender"
    backbone: str = "cnn-small"
    dim: int = 128
    heads: int = 8
    epochs: int = 12
    batch_size: int = 32
    # The paper gives SGD with momentum at batch 32 and no learning rate or schedule; fndkit takes
    # LPAE's (its SGD config: lr 0.1 at batch 256, momentum 0.9, weight decay 1e-6, halve on a
    # validation plateau), scaled linearly to batch 32 (0.0125, rounded to 0.01) as §4.8 scales it
    lr: float = 0.01           # at batch 32, scaled linearly with batch size (paper §4.8)
    momentum: float = 0.9
    weight_decay: float = 1e-6
    loss: str = "npair"
    tau: float = 0.1
    alpha: float = DEFAULT_ALPHA
    # the distillation baselines over the sampled candidates (fndkit.distillation): the weight of
    # the distillation term (kd: λ in [0, 1]; margin-mse, rd, rrd: added with this weight), the
    # temperature (kd: of the softmax; rrd: of the rank-based sampling of the teacher's top items)
    # and K, the teacher's top items of each user's sampled pool (rd, rrd)
    kd_weight: float = 0.5
    kd_temperature: float = 2.0
    rd_k: int = 5
    n_negatives: int | None = None   # None: the batch size (paper §3.2.1)
    # "shared": one set of N negatives per step for every pair of the batch; "per_pair": eq. (10)
    # literally, each pair its own N negatives. Both reject only the users' own training positives
    # (shared: of every user in the batch), never held-out ones (paper §3.2.1, §4.9)
    negatives: str = "shared"
    hard_fraction: float = 0.0
    train_split: str = "train"
    val_split: str = "val_teacher"
    lr_factor: float = 0.5
    lr_patience: int = 1
    patience: int = 4          # early stopping, in epochs without a better validation AUC
    # also stop at the first epoch without a better validation AUC once the plateau schedule has
    # brought lr to lr_floor × lr or below (0 = off). Issue 30, replayed exactly from 12 runs' curves
    # (scripts/convergence_cost.py; README "Where a training run's time goes"): 1/16 saved 7% of the
    # epochs for -0.001 points of best validation AUC (-0.07 over 50 demo-rich runs: off there)
    lr_floor: float = 0.0
    max_steps_per_epoch: int | None = None
    lam: float = 0.0           # weight of the contrastive loss (eq. 19); 0 = off
    tau_cl: float = 0.1
    augmentations: str = DEFAULT_AUGMENTATIONS
    projection_dim: int = 128
    seed: int = 0
    device: str = "auto"
    weights: str | None = None  # initial backbone weights: None, "imagenet" or a state-dict path

    def __post_init__(self):
        _check(self.weights is None or (isinstance(self.weights, str) and self.weights.strip() != ""
                                        and self.weights != WEIGHTS_AUTO),
               f"weights={self.weights!r} must be None (random initialisation), 'imagenet' or the "
               f"path of a state-dict file ('auto' is resolved by the stage, see preset_weights)")
        for name in ("model", "backbone", "loss", "train_split", "val_split", "device", "augmentations"):
            value = getattr(self, name)
            _check(isinstance(value, str) and value.strip() != "", f"{name}={value!r} must be a non-empty string")
        for name in ("dim", "heads", "epochs", "batch_size", "patience", "lr_patience", "seed", "projection_dim",
                     "rd_k"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool),
                   f"{name}={value!r} must be an integer")
        for name in ("lr", "momentum", "weight_decay", "tau", "alpha", "hard_fraction", "lr_factor", "lam", "tau_cl",
                     "kd_weight", "kd_temperature", "lr_floor"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool),
                   f"{name}={value!r} must be a number")
            check_finite(name, value)
        for name in ("kd_weight", "kd_temperature"):
            value = getattr(self, name)
            _check(math.isfinite(value), f"{name}={value!r} must be a finite number")
        _check(self.kd_weight >= 0, f"kd_weight={self.kd_weight} must be >= 0 (the weight of the distillation "
                                    f"term; 0 = N-pair alone)")
        _check(self.kd_temperature > 0, f"kd_temperature={self.kd_temperature} must be > 0 (it divides the "
                                        f"logits of soft-target KD, the ranks of RRD's sampling)")
        _check(self.rd_k >= 0, f"rd_k={self.rd_k} must be >= 0 (the teacher's top items per user's sampled "
                               f"pool; 0 = N-pair alone)")
        _check(self.dim > 0 and self.heads > 0 and self.dim % self.heads == 0,
               f"dim={self.dim} must be a positive multiple of heads={self.heads}")
        _check(self.epochs >= 1, f"epochs={self.epochs} must be at least 1")
        _check(self.batch_size >= 2, f"batch_size={self.batch_size} must be at least 2")
        _check(self.lr > 0, f"lr={self.lr} must be > 0")
        _check(0 <= self.momentum < 1, f"momentum={self.momentum} must lie in [0, 1)")
        _check(self.tau > 0, f"tau={self.tau} must be > 0 (it divides the scores, eq. 10)")
        _check(self.alpha > 0, f"alpha={self.alpha} must be > 0 (eq. 12); the paper uses 1.25 or 1.5")
        for name in ("n_negatives", "max_steps_per_epoch"):  # None: the batch size / every batch
            value = getattr(self, name)
            _check(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1),
                   f"{name}={value!r} must be an integer >= 1, or None for "
                   f"{'the batch size' if name == 'n_negatives' else 'every batch'}")
        _check(self.negatives in NEGATIVE_MODES,
               f"negatives={self.negatives!r} must be one of {NEGATIVE_MODES}: 'shared' (one set per "
               f"batch) or 'per_pair' (eq. 10: each positive its own negatives)")
        _check(0.0 <= self.hard_fraction <= 1.0,
               f"hard_fraction={self.hard_fraction} must lie in [0, 1]; the hard protocol uses 0.5")
        _check(self.lam >= 0, f"lam={self.lam} must be >= 0 (weight of the contrastive loss, eq. 19)")
        _check(self.tau_cl > 0, f"tau_cl={self.tau_cl} must be > 0 (eq. 17)")
        _check(self.patience >= 1 and self.lr_patience >= 0, "patience must be >= 1, lr_patience >= 0")
        _check(0 <= self.lr_floor < 1, f"lr_floor={self.lr_floor} must lie in [0, 1): a fraction of lr "
                                       f"(0 = off; 0.0625 stops once the lr has been halved 4 times)")
        _check(self.seed >= 0, f"seed={self.seed} must be >= 0")

    @property
    def negatives_per_pair(self) -> int:
        """N, the negatives each positive is contrasted with (the batch size unless set)."""
        return self.n_negatives or self.batch_size

    @property
    def scaled_lr(self) -> float:
        """Linear learning-rate scaling with batch size (Goyal et al.; paper §4.8)."""
        return self.lr * self.batch_size / 32


# Training-config fields that say where a run happens, not what it is: two configs that differ
# only in these are one run (a stage finished on the CPU is reused when ``device="auto"`` asks).
RUN_ONLY_KEYS = ("device",)


def identity(saved: dict) -> dict:
    """A saved training config (``to_dict()``, fields it lacks already defaulted) without
    :data:`RUN_ONLY_KEYS`, as plain JSON values: what two runs must share to be the same run."""
    return jsonable({k: v for k, v in saved.items() if k not in RUN_ONLY_KEYS})


def within_budget(earlier: dict, later: dict) -> bool:
    """Two :func:`identity` training configs of one run at two epoch budgets: equal but for
    ``epochs``, ``earlier``'s no larger. The plateau schedule and early stopping never read the
    budget, so the run with the smaller one is the other's first epochs: continuing it from its
    ``last.pt`` is training the larger budget."""
    a, b = dict(earlier), dict(later)
    ea, eb = a.pop("epochs", None), b.pop("epochs", None)
    return a == b and isinstance(ea, int) and isinstance(eb, int) and ea <= eb


def train_config(scale: str, role: str, **overrides) -> TrainConfig:
    """A TrainConfig from the scale's preset and explicit overrides (``None`` values are ignored;
    ``weights`` as :func:`preset_weights` reads it): the one place presets become configs
    (:func:`fndkit.stages.training.train_config` adds a run folder's dataset defaults to it).

    ``role`` is "teacher" or "student"; it picks the preset backbone and the validation half.
    """
    _check(role in ("teacher", "student"), f"role={role!r} must be 'teacher' or 'student'")
    preset = SCALE_PRESETS.get(scale)
    _check(preset is not None, f"scale={scale!r} has no training preset; choose one of {sorted(SCALE_PRESETS)}")
    base = {
        "backbone": preset[f"{role}_backbone"],
        "epochs": preset["teacher_epochs" if role == "teacher" else "epochs"],
        "patience": preset["patience"],
        "lr_patience": preset["lr_patience"],
        "lr_floor": preset.get("lr_floor", 0.0),
        "val_split": "val_teacher" if role == "teacher" else "val_student",
    }
    weights = overrides.pop("weights", WEIGHTS_AUTO)   # None means random init here, not "preset"
    base.update({k: v for k, v in overrides.items() if v is not None})
    base["weights"] = preset_weights(preset, base["backbone"], weights)
    return TrainConfig.from_dict(base)


@dataclass(frozen=True)
class DataConfig(_Base):
    """Parameters of notebooks/00_data."""

    source: str = "synthetic"
    subset: str = "630"
    scale: str = "demo"
    variable_size: bool = False
    image_size: int = 32
    seed: int = 0
    candidate_ratio: int = 10
    cold_subset: str | None = None
    extra: dict = field(default_factory=dict)
    format: str = "auto"   # of a source folder: "polyvore" (Polyvore-U), "folder" (outfit folder)
    # synthetic only: the false-negative-rate knob (fndkit.data.synthetic.make_dataset); 1.0 is
    # the benchmark as it always was, 0.7 … 1.7 gives about 2% … 30% false negatives at demo scale
    taste_breadth: float = 1.0
    # real data (images read from files): "once" decodes every image once, in parallel, into a
    # uint8 store in the run folder (n_items * S * S * 3 bytes: ~30 GB for Polyvore-630 at 224 px)
    # that training memory-maps; "on_the_fly" keeps decoding JPEGs at every step (no disk, slow)
    decode: str = "once"
    # synthetic only: "simple" (the default benchmark) or "rich" (attributes that must be seen, so
    # a bigger CNN knows more: the distillation benchmark, fndkit/data/appearance.py; image_size 64)
    appearance: str = "simple"

    def __post_init__(self):
        check_finite("taste_breadth", self.taste_breadth)
        _check(self.appearance in APPEARANCES,
               f"appearance={self.appearance!r} is unknown; choose one of {APPEARANCES} ('rich': the "
               f"distillation benchmark, -p appearance rich -p image_size 64)")
        _check(self.source == "synthetic" or self.appearance == "simple",
               f"appearance={self.appearance!r} changes the synthetic generator only; real data "
               f"(source={self.source!r}) looks as it looks: leave it at 'simple'")
        _check(isinstance(self.taste_breadth, (int, float)) and not isinstance(self.taste_breadth, bool)
               and self.taste_breadth > 0,
               f"taste_breadth={self.taste_breadth!r} must be a positive number (1.0: the default "
               f"benchmark; larger: more false negatives among random mixtures)")
        _check(self.source == "synthetic" or self.taste_breadth == 1.0,
               f"taste_breadth={self.taste_breadth!r} changes the synthetic generator only; real data "
               f"(source={self.source!r}) has the false negatives it has: leave it at 1.0")
        _check(self.decode in DECODE_MODES,
               f"decode={self.decode!r} is unknown; choose one of {DECODE_MODES} ('once': decode every "
               f"image once into a store in the run folder; 'on_the_fly': decode at every step, when "
               f"the disk is short)")
        _check(self.format in DATA_FORMATS,
               f"format={self.format!r} is unknown; choose one of {DATA_FORMATS} ('polyvore': a "
               f"Polyvore-U release, 'folder': an outfit folder, see fndkit/data/folder.py)")
        _check(self.source != "synthetic" or self.format == "auto",
               f"format={self.format!r} reads a folder, but source='synthetic'; pass the folder as "
               f"source (-p source <path> -p format {self.format})")
        if self.source == "synthetic":
            _check(self.scale in SCALES, f"scale={self.scale!r} is unknown; choose one of {SCALES}")
        _check(isinstance(self.image_size, int) and self.image_size >= 16,
               f"image_size={self.image_size!r} must be an integer >= 16 (32 on CPU, 224 for AlexNet)")
        check_int("candidate_ratio", self.candidate_ratio, 1)
        check_int("seed", self.seed, 0)
        _check(isinstance(self.source, str) and self.source.strip() != "",
               f"source={self.source!r} must be 'synthetic' or the path of a data folder (a string)")
        _check(isinstance(self.variable_size, bool),
               f"variable_size={self.variable_size!r} must be True or False (-p variable_size True)")
        subsets = ("630", "519", "53", "32")  # fndkit.data.polyvore.POLYVORE_SUBSETS
        _check(str(self.subset) in subsets, f"subset={self.subset!r} is unknown; choose one of {subsets}")
        _check(self.cold_subset is None or str(self.cold_subset) in subsets,
               f"cold_subset={self.cold_subset!r} is unknown; choose one of {subsets}, or leave it "
               f"empty to guess")
