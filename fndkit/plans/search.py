"""A method's hyper-parameters searched on validation: a plan transformer any plan can use.

Paper §4.1.4: "we report the test performance with their optimal hyper-parameters searched via the
validation set". Each method (N-pair, BPR, FND, FND-CL, each baseline, each distillation
objective) declares its space beside its objective or model (``search_space``: TrainConfig field
-> values); :func:`space` reads it. The search of one method is:

1. :func:`trials` — the method's *base job* (the one its table row trains) and its space give one
   trial job per point of the (small, categorical) grid, each in its own stage folder
   (:func:`fndkit.stages.naming.trial`), marked ``Job.trial = method``: it trains on the training
   split and is scored on the student's validation half only (the test candidates are never read);
2. the trial jobs run through :func:`fndkit.plans.execute.run_plan` like any other job — locally,
   or through the study storage (:class:`fndkit.plans.study.Study`, where a median pruner may stop
   a trial falling behind: it is then never chosen);
3. :func:`best_on_validation` — the point with the highest validation AUC; ties go to the first
   point in declaration order; pruned trials are out;
4. :func:`adopt` — at the search seed, the chosen trial's training is handed to the method's table
   stage (its weights, ``last.pt`` and history), so that stage only scores the test set.

Nothing here imports a plan builder: a plan passes base jobs in and gets choices back.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Iterable

from ..artifacts import read_json
from ..distillation import METHODS as DISTILLATION
from ..models.registry import MODELS, model_class
from ..objectives import BPR, FND, NPair, WithContrastive
from ..rundir import RunFolder
from ..stages import naming
from ..stages.training import PARAMS as TRAINING_PARAMS
from .execute import Job, PlanOutcome

PAPER_METHODS = ("npair", "bpr", "fnd", "fnd-cl")


class SearchError(ValueError):
    """Bad input to a search (named, with the fix), found before any training."""


# ------------------------------------------------------------------------------------------------
# Spaces: declared beside each objective and model

def baselines() -> list[str]:
    """Registered models other than the paper's recommender (the Table-2 baselines)."""
    return sorted(k for k in MODELS if k != "recommender")


def methods() -> list[str]:
    """Every searchable method: the paper's four, each student objective with a space, each baseline."""
    return [*PAPER_METHODS, *DISTILLATION, *baselines()]


def declared_space(method: str) -> dict[str, list]:
    """The search space declared beside ``method``'s objective or model (TrainConfig field -> values)."""
    builtin = {"npair": NPair, "bpr": BPR, "fnd": FND, "fnd-cl": WithContrastive}
    if method in builtin:
        return {k: list(v) for k, v in builtin[method].search_space.items()}
    if method in MODELS and method != "recommender":
        return {k: list(v) for k, v in getattr(model_class(method), "search_space", {}).items()}
    if method in DISTILLATION:
        return {k: list(v) for k, v in DISTILLATION[method].search_space.items()}
    raise SearchError(f"method {method!r} is unknown; choose one of {', '.join(methods())} (or all)")


def stage_kind(method: str) -> str:
    if method == "fnd-cl":
        return "contrastive"
    return "baseline" if method in MODELS and method != "recommender" else "student"


def space(method: str) -> dict[str, list]:
    """What the search of ``method`` tries: its declared space, less the names its stage's
    ``Params`` cannot set (:func:`unsearchable` names them; the command line says so when the
    search starts)."""
    fields = set(TRAINING_PARAMS[stage_kind(method)].field_names())
    return {k: v for k, v in declared_space(method).items() if k in fields}


def unsearchable(method: str) -> list[str]:
    """Names declared in ``method``'s space that its stage cannot take (left out of the search)."""
    return sorted(set(declared_space(method)) - set(space(method)))


def restrict(method: str, values: dict[str, list] | None) -> dict[str, list]:
    """``method``'s space, restricted to ``values`` (name -> a subset of the declared values);
    a name or value outside the declared space is refused."""
    full = space(method)
    if not full:
        raise SearchError(f"method {method!r} declares no search space: add search_space to its objective "
                          f"or model class (see fndkit/baselines/common.py)")
    out = dict(full)
    for name, chosen in (values or {}).items():
        if name not in full:
            raise SearchError(f"{method}: {name!r} is not in its search space ({', '.join(full)}); "
                              f"drop it or pick one of those names")
        bad = [v for v in chosen if not any(_same(v, d) for d in full[name])]
        if bad:
            raise SearchError(f"{method}: {name}={bad[0]!r} is outside the declared space {full[name]}; pick "
                              f"values from it (or declare the value beside the objective / model)")
        out[name] = [d for d in full[name] if any(_same(v, d) for v in chosen)]
    return out


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a).replace(" ", "") == str(b).replace(" ", "")
    return math.isclose(float(a), float(b), rel_tol=1e-9)


def grid(sp: dict[str, list]) -> list[dict]:
    """Every point of a categorical space, in declaration order."""
    points = [{}]
    for name, values in sp.items():
        points = [{**p, name: v} for p in points for v in values]
    return points


def parse_values(items: Iterable[str]) -> dict[str, dict[str, list]]:
    """``--values fnd.alpha=1.25,2 bpr.tau=0.1`` -> {method: {name: [values]}}."""
    out: dict[str, dict[str, list]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not text:
            raise SearchError(f"--values {item!r} must look like METHOD.NAME=V1,V2 (e.g. fnd.alpha=1.25,2)")
        if name == "augmentations":  # a pair is itself "a,b": pairs are separated by ';'
            vals = [v.strip() for v in text.split(";")]
        else:
            vals = []
            for v in text.split(","):
                try:
                    vals.append(float(v))
                except ValueError:
                    vals.append(v)
        out.setdefault(method, {})[name] = vals
    return out


# ------------------------------------------------------------------------------------------------
# The transformer

def trials(method: str, base: Job, sp: dict[str, list]) -> list[Job]:
    """One trial job per point of ``sp``: ``base`` with the point's values, in its own folder."""
    return [Job(base.params.replace(**point, out_name=naming.trial(method, point)), method=method, shown=point,
                experiment="search", trial=method) for point in grid(sp)]


def validation_auc(job: Job) -> float | None:
    """A finished trial's best validation AUC (None when it has not finished)."""
    path = RunFolder(job.run_dir).metrics_path(job.stage)
    if not path.exists():
        return None
    value = read_json(path).get("best_val_auc")
    return float(value) if value is not None and math.isfinite(float(value)) else None


def best_on_validation(trial_jobs: list[Job], outcome: PlanOutcome | None = None) -> dict:
    """The chosen point of one method's trials: the highest validation AUC; on ties the first
    point in declaration order; pruned trials (the outcome's records say which) are out.
    Returns {values, val_auc, stage, trials, pruned}; a search with no finished trial is refused."""
    pruned = {r["key"] for r in (outcome.records if outcome else []) if r.get("pruned") is not None}
    scored = [(validation_auc(j), i, j) for i, j in enumerate(trial_jobs) if j.key not in pruned]
    scored = [(v, i, j) for v, i, j in scored if v is not None]
    method = trial_jobs[0].trial if trial_jobs else "?"
    if not scored:
        raise SearchError(f"the search for {method} finished no trial ({len(trial_jobs)} trial(s), "
                          f"{len(pruned)} pruned); see the plan's record and the trials' folders")
    value, _, job = max(scored, key=lambda s: (s[0], -s[1]))
    return {"values": dict(job.shown), "val_auc": value, "stage": job.stage, "seed": job.seed,
            "trials": len(trial_jobs), "pruned": len(pruned & {j.key for j in trial_jobs})}


ADOPTED = ("checkpoint.pt", "last.pt", "history.json")


def adopt(trial_stage: str, job: Job) -> bool:
    """Hand the chosen trial's training to ``job``'s stage (same run folder), so the chosen point is
    not trained twice: its weights, ``last.pt`` and history go into the (not yet existing) stage
    folder without ``metrics.json``, so the stage's job resumes it — with nothing left to train,
    it only scores the test set, after the choice. Only when the two training configs are equal
    (else the stage trains as usual). Returns whether it adopted."""
    folder = RunFolder(job.run_dir)
    source, target = folder.stage_dir(trial_stage), folder.stage_dir(job.stage)
    if target.exists() or not all((source / f).exists() for f in (*ADOPTED, "config.json")):
        return False
    if read_json(source / "config.json").get("train") != json.loads(json.dumps(job.params.plan().cfg.to_dict())):
        return False
    tmp = target.with_name(f".{target.name}.adopting-{os.getpid()}")
    tmp.mkdir(parents=True)
    for name in ADOPTED:
        shutil.copyfile(source / name, tmp / name)
    for events in source.glob("events.out.tfevents.*"):
        shutil.copyfile(events, tmp / events.name)
    try:
        os.rename(tmp, target)  # another worker adopted first: keep theirs
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def adopt_matching(trial_jobs: Iterable[Job], jobs: Iterable[Job]) -> list[str]:
    """Adopt every finished trial into each plan job that trains the same configuration in the
    same run folder (the chosen point's table row, and e.g. every point of Fig. 4: FND's grid is
    trained once); returns the stages that adopted."""
    def same(a: Job, b: Job) -> bool:
        return a.kind == b.kind and a.run_dir == b.run_dir and \
            a.params.replace(out_name=None).to_dict() == b.params.replace(out_name=None).to_dict()

    done = []
    for job in jobs:
        source = next((t for t in trial_jobs if same(t, job) and validation_auc(t) is not None), None)
        if source is not None and adopt(source.stage, job):
            done.append(job.stage)
    return done


def choose(searches: dict[str, list[Job]], outcome: PlanOutcome | None = None) -> dict[str, dict]:
    """:func:`best_on_validation` for each method's trial jobs."""
    return {method: best_on_validation(jobs, outcome) for method, jobs in searches.items()}


def describe_unsearchable(methods_: Iterable[str]) -> list[str]:
    """One line per method whose declared space names a value its stage cannot take."""
    return [f"{m}: {', '.join(unsearchable(m))} declared but not settable from its stage; searched without it"
            for m in methods_ if unsearchable(m)]
