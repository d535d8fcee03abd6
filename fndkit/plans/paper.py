"""The paper's evidence as plans: Tables 2–5 and Figures 4–7 over seeds, and the claims they test.

    python -m fndkit paper table2 fig4 --seeds 0 1 2 [--root outputs/paper] [--quick]
    python -m fndkit paper --verdict                    # the claims' core over 10 seeds (see VERDICT)
    make paper                                          # every experiment, 3 seeds

Each experiment is a plan builder ``(sweep, seed) -> [Job]``: the jobs carry the experiment, the
method they stand for and the settings the experiment varies, so that :func:`fndkit.results.collect`
reads the outcome back in one schema. Runs of one seed share one run folder
(``<root>/<machine>/seed<k>/``): one dataset, one autoencoder and one teacher per seed serve every
student of every experiment, and a stage trained for one experiment (the FND row of Table 2 is the
α it was searched at in Fig. 4) is one job, trained once. Budgets are fair: every student trains
until its validation AUC plateaus (early stopping; the epoch budget is large enough that runs stop
on their own), and the tables report epochs-to-best.

Before the seeds, each method's hyper-parameters are searched on the search seed's validation half
(:mod:`fndkit.plans.search`); :attr:`Sweep.chosen` then holds the chosen values, which every job of
that method trains with unless the experiment varies them. FND-CL takes FND's chosen α.

:data:`CLAIMS` lists the comparisons the paper makes, each with the sign it claims and, where the
paper gives one, the size of the effect it reports (Table 2, 630 set); the results module tests
them with seeds as replicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..config import PAPER_DEFAULTS, SCALE_PRESETS
from ..models.backbones import student_families
from ..models.registry import MODELS
from ..repro import machine_label
from ..results.claims import Comparison
from ..rundir import RunFolder, resolve_path
from ..stages import naming
from ..stages.cold_start import supports_cold_start
from . import lab, search
from .execute import Job, params_for

ALPHAS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)                          # Fig. 4
AUGMENTATIONS = ("identity", "erase", "replace")                    # Fig. 5
BATCH_SIZES = (16, 32, 64, 128)                                    # Fig. 7
QUICK_PAIRS = (("erase", "replace"),)                               # --quick: one cell of Fig. 5


class ExperimentError(ValueError):
    """A plan's input is wrong; the message names it."""


@dataclass
class Sweep:
    """Where and how a sweep runs: root folder, machine label, seeds, data scale, quick mode, the
    search's choices (method -> values), and the Table 2 / 4 rows kept (empty: all)."""

    root: Path
    seeds: tuple[int, ...] = (0,)
    scale: str = "demo"
    quick: bool = False
    device: str = "auto"
    machine: str = ""
    chosen: dict = field(default_factory=dict)
    methods: tuple = ()
    # one dataset, autoencoder and teacher (the first seed's) serve every seed; the seeds replicate
    # the students' training (stages named <stage>-seed<k>): see VERDICT
    shared: bool = False
    verdict: bool = False

    def __post_init__(self):
        self.root = resolve_path(self.root)
        if self.quick:
            self.scale = "tiny"
        if self.scale not in SCALE_PRESETS:
            raise ExperimentError(f"scale={self.scale!r} has no budget; choose one of {sorted(SCALE_PRESETS)}")
        if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise ExperimentError(f"seeds={self.seeds!r} must be one or more integers >= 0")
        self.machine = self.machine or machine_label(self.device)

    @property
    def folder(self) -> Path:
        return self.root / self.machine

    def seed_dir(self, seed: int) -> Path:
        return naming.seed_folder(self.folder, self.data_seed if self.shared else seed)

    @property
    def data_seed(self) -> int:
        """The seed of the one dataset (and teacher) when they are shared."""
        return self.seeds[0]

    def stage(self, name: str, seed: int) -> str:
        """A student's stage: ``<name>-seed<k>`` when the seeds share one run folder."""
        return naming.replicate(name, seed) if self.shared else name

    @property
    def epochs(self) -> int:
        return SCALE_PRESETS[self.scale]["converged_epochs"]

    def identity(self) -> dict:
        """What makes two plans one (a study storage refuses another plan's studies)."""
        return {"folder": str(self.folder), "scale": self.scale, "quick": self.quick, "shared": self.shared}


# ------------------------------------------------------------------------------------------------
# Methods

def baselines(sweep: Sweep | None = None) -> list[str]:
    """Registered models other than the paper's recommender (the Table-2 baselines); a quick sweep
    keeps two of them (one personalized, one not, where registered) so the runner stays cheap."""
    names = search.baselines()
    if sweep is not None and sweep.quick:
        pick = [next((n for n in names if MODELS[n].personalized), None),
                next((n for n in names if not MODELS[n].personalized), None)]
        names = [n for n in pick if n]
    return names


def personalized(kind: str) -> bool:
    return bool(MODELS[kind].personalized)


def stage_job(sweep: Sweep, seed: int, kind: str, stage: str | None = None, method: str = "",
              experiment: str = "", shown: dict | None = None, **values) -> Job:
    """The job of stage ``kind`` in the seed's run folder; a training stage fills ``stage``
    (``out_name``); every stage but the data takes the sweep's device."""
    values = {"run_dir": str(sweep.seed_dir(seed)), "seed": seed, **values}
    if kind != "data":
        values.setdefault("device", sweep.device)
    if kind in ("student", "contrastive", "baseline"):
        values["out_name"] = stage
    return Job(params_for(kind, **values), method=method, experiment=experiment, shown=shown or {})


def method_values(sweep: Sweep, method: str) -> dict:
    """What ``method`` trains with: the search's choice; FND-CL also takes FND's chosen α."""
    values = dict(sweep.chosen.get(method, {}))
    if method == "fnd-cl" and "alpha" in sweep.chosen.get("fnd", {}):
        values.setdefault("alpha", sweep.chosen["fnd"]["alpha"])
    return values


def method_run(method: str, sweep: Sweep, seed: int = 0, hard: bool = False, experiment: str = "",
               shown: dict | None = None, stage: str | None = None, **extra) -> Job:
    """The job that trains ``method`` (npair, bpr, fnd, fnd-cl, a distillation loss, or a
    baseline's name) in its table stage (:func:`fndkit.stages.naming.method_stage`), or in
    ``stage`` when an experiment varies something."""
    params = {"epochs": sweep.epochs, **method_values(sweep, method), **extra}
    if hard:
        params["hard_fraction"] = 0.5
    stage = sweep.stage(stage or naming.method_stage(method, hard), seed)
    kw = {"method": method, "experiment": experiment, "shown": shown}
    if method == "fnd-cl":
        return stage_job(sweep, seed, "contrastive", stage, **kw, **params)
    if method in MODELS and method != "recommender":
        return stage_job(sweep, seed, "baseline", stage, model=method, **kw, **params)
    return stage_job(sweep, seed, "student", stage, loss=method, **kw, **params)


def _only(methods: list[str], sweep: Sweep | None) -> list[str]:
    return [m for m in methods if not sweep or not sweep.methods or m in sweep.methods]


def table2_methods(sweep: Sweep | None = None) -> list[str]:
    """Table 2's rows (the sweep's ``methods`` when it names some: a method outside the table, such
    as a distillation loss the ``search`` verb was given, becomes a row of its own)."""
    rows = ["npair", "bpr", "fnd", "fnd-cl", "kd", *baselines(sweep)]
    return _only(rows, sweep) + [m for m in (sweep.methods if sweep else ()) if m not in rows]


def table4_methods(sweep: Sweep | None = None) -> list[str]:
    paper = ["npair", "fnd"] if sweep is not None and (sweep.quick or sweep.verdict) else \
        ["npair", "bpr", "fnd", "fnd-cl"]
    if sweep is not None and sweep.verdict:
        paper.append("fnd-cl")
    return _only([*paper, *(b for b in baselines(sweep) if personalized(b))], sweep)


# ------------------------------------------------------------------------------------------------
# Experiments

def _table2(sweep: Sweep, seed: int) -> list[Job]:
    return [method_run(m, sweep, seed, experiment="table2") for m in table2_methods(sweep)]


def _table3(sweep: Sweep, seed: int) -> list[Job]:
    trained = _table2(sweep, seed)
    stages = [naming.TEACHER] + [j.stage for j in trained if j.method not in MODELS or supports_cold_start(j.method)]
    if sweep.shared and seed != sweep.data_seed:  # one cold-start stage per run folder (see VERDICT)
        return trained
    cold = stage_job(sweep, seed, "cold_start", method="cold-start", experiment="table3", models=stages,
                     n_interactions=[1, 5], curve_interactions=[1, 5],
                     repetitions=SCALE_PRESETS[sweep.scale]["cold_repetitions"])
    return trained + [cold]


def _table4(sweep: Sweep, seed: int) -> list[Job]:
    return [method_run(m, sweep, seed, hard=True, experiment="table4", shown={"hard_fraction": 0.5})
            for m in table4_methods(sweep)]


def _fig4(sweep: Sweep, seed: int) -> list[Job]:
    """FND's α grid (Fig. 4) beside N-pair and BPR. Every point has its own stage; the point the
    search chose is Table 2's FND row (one job). A verdict plan draws the grid on the search seed
    only: the search's trials, adopted (trained once)."""
    if sweep.verdict and seed != sweep.seeds[0]:
        return []
    runs = [method_run(m, sweep, seed, experiment="fig4") for m in ("npair", "bpr")]
    chosen = method_values(sweep, "fnd").get("alpha", PAPER_DEFAULTS["fixed"]["alpha"])
    for alpha in (ALPHAS[1:2] if sweep.quick else ALPHAS):
        mine = {} if alpha == chosen else {"alpha": alpha, "stage": naming.variant("student_fnd", alpha=alpha)}
        runs.append(method_run("fnd", sweep, seed, experiment="fig4", shown={"alpha": alpha}, **mine))
    return runs


def _fig5(sweep: Sweep, seed: int) -> list[Job]:
    runs = []
    chosen = method_values(sweep, "fnd-cl").get("augmentations", PAPER_DEFAULTS["fixed"]["augmentations"])
    for i, a in enumerate(AUGMENTATIONS):
        for b in AUGMENTATIONS[i:]:
            if a == b == "identity" or (sweep.quick and (a, b) not in QUICK_PAIRS):
                continue  # two identical views teach nothing (paper Fig. 5 leaves it out)
            pair = f"{a},{b}"
            mine = {} if pair == chosen else {"augmentations": pair,
                                              "stage": naming.variant("contrastive", augmentations=pair)}
            runs.append(method_run("fnd-cl", sweep, seed, experiment="fig5", shown={"view1": a, "view2": b}, **mine))
    return runs


def _fig6(sweep: Sweep, seed: int) -> list[Job]:
    runs = []
    preset = _preset(sweep)
    sizes = {k: v for k, v in student_families(preset).items() if k != "teacher"}
    for size, backbone in list(sizes.items())[:1] if sweep.quick else sizes.items():
        for method in ("fnd",) if sweep.quick else ("npair", "fnd"):
            own = backbone == SCALE_PRESETS[preset]["student_backbone"]  # the preset's is Table 2's row
            mine = {} if own else {"backbone": backbone, "stage": naming.sized(size, method)}
            runs.append(method_run(method, sweep, seed, experiment="fig6", shown={"size": size, "backbone": backbone},
                                   **mine))
    return runs


def _fig7(sweep: Sweep, seed: int) -> list[Job]:
    return [method_run("fnd", sweep, seed, experiment="fig7", shown={"batch_size": batch},
                       **({} if batch == 32 else {"batch_size": batch,
                                                  "stage": naming.variant("student_fnd", batch=batch)}))
            for batch in (BATCH_SIZES[1:2] if sweep.quick else BATCH_SIZES)]


def _preset(sweep: Sweep) -> str:
    first = RunFolder(sweep.seed_dir(sweep.seeds[0]))
    return first.preset_name() if first.has_data() else sweep.scale


EXPERIMENTS: dict[str, Callable[[Sweep, int], list[Job]]] = {
    "table2": _table2, "table3": _table3, "table4": _table4, "table5": lambda sweep, seed: [],
    "fig4": _fig4, "fig5": _fig5, "fig6": _fig6, "fig7": _fig7,
}
"""Experiment name -> its plan builder: (sweep, seed) -> jobs."""
LAB = ("fn_rate", "fn_ablation")
ALL = (*EXPERIMENTS, *LAB)


def register_experiment(name: str, runs: Callable[[Sweep, int], list[Job]]) -> None:
    """Add an experiment to the paper's plans."""
    EXPERIMENTS[name] = runs


def check_names(names: Iterable[str]) -> list[str]:
    names = list(ALL) if list(names) in (["all"], []) else list(dict.fromkeys(names))
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        raise ExperimentError(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(ALL)} or all")
    return names


def lab_runs(name: str, sweep: Sweep) -> list[Job]:
    """The false-negative lab's runs (``fn_rate``, ``fn_ablation``): their own run folders under
    ``<root>/<machine>/fnlab/``; a quick sweep keeps one breadth."""
    kwargs = {"breadths": (1.0,)} if sweep.quick else {}
    if sweep.quick and name == "fn_rate":
        kwargs["alphas"] = (1.25,)
    builder = {"fn_rate": lab.fn_rate_runs, "fn_ablation": lab.fn_ablation_runs}[name]
    return builder(sweep.folder / "fnlab", seeds=sweep.seeds, scale=sweep.scale, device=sweep.device, **kwargs)


def prerequisites(sweep: Sweep, seed: int) -> list[Job]:
    """What every experiment of a seed stands on: its dataset, autoencoder and teacher (the first
    seed's when they are shared)."""
    seed = sweep.data_seed if sweep.shared else seed
    return [stage_job(sweep, seed, "data", experiment="prerequisites", scale=sweep.scale),
            stage_job(sweep, seed, "autoencoder", experiment="prerequisites", **({"epochs": 3} if sweep.quick else {})),
            stage_job(sweep, seed, "teacher", method="teacher", experiment="prerequisites")]


def plan(names: Iterable[str], sweep: Sweep) -> list[Job]:
    """Every job of the experiments ``names`` over the sweep's seeds: per seed its prerequisites,
    then each experiment's jobs (a job serving two experiments appears twice: the executor runs
    it once, the results give it to both); the lab's experiments in their own run folders."""
    names = check_names(names)
    jobs: list[Job] = []
    paper = [n for n in names if n in EXPERIMENTS]
    for seed in sweep.seeds if paper else ():
        jobs += prerequisites(sweep, seed)
        for name in paper:
            jobs += EXPERIMENTS[name](sweep, seed)
    for name in names:
        if name in LAB:
            jobs += lab_runs(name, sweep)
    one_job_per_stage(jobs)
    return jobs


def one_job_per_stage(jobs: Iterable[Job]) -> None:
    """Refuse a plan where two different jobs would fill one stage folder (a naming slip)."""
    seen: dict[tuple[str, str], Job] = {}
    for job in jobs:
        where = (job.run_dir, job.stage)
        other = seen.setdefault(where, job)
        if other.key != job.key:
            a, b = other.params.to_dict(), job.params.to_dict()
            diff = ", ".join(f"{k}: {a.get(k)!r} / {b.get(k)!r}" for k in sorted(a) if a.get(k) != b.get(k))
            raise ExperimentError(f"two different jobs fill {job.describe()} ({diff}); name one with "
                                  f"fndkit.stages.naming")


# The verdict plan (``python -m fndkit paper --verdict``): the claims' core over 10 seeds on the
# 2-core CPU box. One dataset, autoencoder and teacher serve every seed (they are the benchmark the
# methods are compared on; the seeds replicate the students' training, the variance between runs
# that a claim about a method must beat); the search runs once, on the first seed, over smaller
# grids than the full spaces (VERDICT_SPACES); Fig. 4 is FND's search grid, adopted. Left out, and
# why: the other baselines (LPAE-u is the strongest of Table 2), Figs. 5–7 (one seed each in the
# full plan), Table 3 beyond the first seed (one cold-start stage per run folder).
VERDICT_NAMES = ("table2", "table4", "fig4", "table3")
VERDICT_METHODS = ("npair", "bpr", "fnd", "fnd-cl", "lpae-u")
VERDICT_SPACES = {"npair": {"lr": [0.003, 0.01, 0.03]}, "bpr": {"tau": [0.1, 0.2]},
                  "fnd": {"alpha": list(ALPHAS)},
                  "fnd-cl": {"lam": [0.1, 0.2, 0.5], "augmentations": ["erase,replace"]},
                  "lpae-u": {"lr": [0.01, 0.03], "tau": [0.1, 0.3]}}
VERDICT_SEEDS = tuple(range(10))


def search_bases(methods: Iterable[str], sweep: Sweep, seed: int) -> dict[str, Job]:
    """The job each searched method's trials start from (its Table 2 row at the search seed)."""
    return {m: method_run(m, sweep, seed, experiment="search") for m in methods}


# ------------------------------------------------------------------------------------------------
# Claims

# The paper's own differences (Polyvore-630 AUC): Table 2 FND 89.91, FND-CL 90.28, LPAE-u 87.82;
# Table 4 (hard) FND 83.55, FND-CL 84.24, LPAE-u 81.69. N-pair and BPR appear only in Fig. 4's
# picture (no number in the text), w-avg vs avg only in words (§4.3): no effect size for those.
CLAIMS = (  # label, a, b (methods of `experiment`), protocol, list, sign, the paper's effect
    Comparison("FND beats N-pair (Fig. 4: 'FND can surpass a strong N-pair'; α chosen on validation)", "fnd",
               "npair", experiment="table2"),
    Comparison("N-pair beats BPR (Fig. 4: 'clearly outperforms')", "npair", "bpr", experiment="table2"),
    Comparison("FND-CL beats FND (Table 2)", "fnd-cl", "fnd", paper_effect=0.0037, experiment="table2"),
    Comparison("FND beats LPAE-u (Table 2)", "fnd", "lpae-u", paper_effect=0.0209, experiment="table2"),
    Comparison("FND beats N-pair on hard negatives (Table 4's protocol; no N-pair row there)", "fnd", "npair",
               "hard", experiment="table4"),
    Comparison("FND-CL beats FND on hard negatives (Table 4)", "fnd-cl", "fnd", "hard", paper_effect=0.0069,
               experiment="table4"),
    Comparison("FND beats LPAE-u on hard negatives (Table 4)", "fnd", "lpae-u", "hard", paper_effect=0.0186,
               experiment="table4"),
    Comparison("w-avg beats avg for a cold starter with 5 outfits (Table 3, FND student)", "student_fnd",
               "student_fnd", "random", "cold", experiment="table3",
               shown_a={"n_interactions": 5, "strategy": "w-avg"}, shown_b={"n_interactions": 5, "strategy": "avg"}),
)
