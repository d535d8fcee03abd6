"""08_false_negatives: the teacher's false-negative flags against the generator's ground truth.

FND (eqs. 11–14) scales each negative's logit by d_ijk = α(r̂_i − r̂_ijk) from a frozen teacher:
d < 0 flags a likely false negative (pulled), 0 < d < 1 weakens the push, d > 1 strengthens it. On
the built-in benchmark the generator knows which sampled negatives are true false negatives
(:class:`~fndkit.data.truth.SyntheticTruth`), so every question about the teacher has a measured
answer. Pure functions over arrays (tested) do the arithmetic:

- :func:`flag_quality` — flagged fraction, precision and recall of the flags (d < 0);
- :func:`alpha_table` — per α: the flags (α cannot move them: the sign of d is the sign of
  r̂_i − r̂_ijk) and how α rescales the push on true false negatives and on true negatives;
- :func:`flag_pr_curve` — precision / recall if the boundary were moved by a margin;
- :func:`calibration_table`, :func:`rank_correlation` — teacher score against true affinity;
- :func:`student_table` — the run folder's students: test AUC, gain over N-pair, epochs to best.

:func:`negative_table` draws the training sampler's per-pair negatives and scores them with a
teacher; :func:`strength_table` repeats the flags for the teacher's snapshots (its weights after
chosen epochs, ``02_teacher``'s ``snapshot_epochs``); :func:`run` does all of it for a run folder
and writes ``false_negatives/metrics.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Iterable

import numpy as np
import pandas as pd

from ..artifacts import jsonable, write_json
from ..config import check_int
from ..data.sampling import NegativeSampler
from ..data.schema import OutfitDataset
from ..models.contract import OutfitModel
from ..objectives import prepare_teacher
from ..repro import resolve_device, seed_everything
from ..rundir import FALSE_NEGATIVES, TEACHER, RunFolder, StageError
from .params import StageParams

ALPHAS = (0.5, 1.0, 1.25, 1.5, 2.0, 3.0)


# --------------------------------------------------------------------------------------------
# pure functions


def _arrays(margin, is_fn) -> tuple[np.ndarray, np.ndarray]:
    margin = np.asarray(margin, dtype=np.float64).ravel()
    is_fn = np.asarray(is_fn, dtype=bool).ravel()
    if margin.shape != is_fn.shape or margin.size == 0:
        raise ValueError(f"margin and is_fn must be non-empty and of one length, got {margin.shape} "
                         f"and {is_fn.shape}")
    return margin, is_fn


def flag_quality(margin, is_fn, threshold: float = 0.0) -> dict:
    """The teacher's flags against the truth.

    margin: [M] r̂_i − r̂_ijk of each sampled negative (d = α · margin); is_fn: [M] bool, a true
    false negative. A negative is flagged when ``margin < threshold`` (0: FND's d < 0). Returns
    ``{"n", "flagged_fraction", "true_fn_fraction", "precision", "recall"}`` (precision NaN when
    nothing is flagged, recall NaN when there is no true false negative).
    """
    margin, is_fn = _arrays(margin, is_fn)
    flagged = margin < threshold
    hits = int((flagged & is_fn).sum())
    return {"n": int(margin.size), "flagged_fraction": float(flagged.mean()),
            "true_fn_fraction": float(is_fn.mean()),
            "precision": hits / int(flagged.sum()) if flagged.any() else float("nan"),
            "recall": hits / int(is_fn.sum()) if is_fn.any() else float("nan")}


def alpha_table(margin, is_fn, alphas: Iterable[float] = ALPHAS) -> pd.DataFrame:
    """Per α and truth class (``true FN`` / ``true negative``): what d = α · margin does.

    Columns: alpha, truth, n, mean_d, pulled (share with d < 0), weakened (0 ≤ d < 1: pushed less
    than N-pair pushes it), strengthened (d > 1), and the flags' precision / recall (the same for
    every α, repeated on each row). Where α moves most negatives between "weakened" and
    "strengthened" while the flags stay put, its effect is a rescaling, not the pull.
    """
    margin, is_fn = _arrays(margin, is_fn)
    rows = []
    for alpha in alphas:
        if not alpha > 0:
            raise ValueError(f"alpha={alpha!r} must be > 0 (eq. 12)")
        d = alpha * margin
        q = flag_quality(margin, is_fn)
        for truth, sel in (("true FN", is_fn), ("true negative", ~is_fn)):
            part = d[sel]
            rows.append({"alpha": float(alpha), "truth": truth, "n": int(sel.sum()),
                         "mean_d": float(part.mean()) if part.size else float("nan"),
                         "pulled": float((part < 0).mean()) if part.size else float("nan"),
                         "weakened": float(((part >= 0) & (part < 1)).mean()) if part.size else float("nan"),
                         "strengthened": float((part > 1).mean()) if part.size else float("nan"),
                         "flag_precision": q["precision"], "flag_recall": q["recall"]})
    return pd.DataFrame(rows)


def flag_pr_curve(margin, is_fn, thresholds: Iterable[float] | None = None) -> pd.DataFrame:
    """Precision and recall of "flag when margin < t" over thresholds t (default: 41 quantiles of
    the margins, and 0 — FND's own boundary). Columns: threshold, flagged_fraction, precision,
    recall, is_fnd (t = 0)."""
    margin, is_fn = _arrays(margin, is_fn)
    if thresholds is None:
        thresholds = np.unique(np.concatenate([np.quantile(margin, np.linspace(0, 0.5, 41)), [0.0]]))
    rows = []
    for t in thresholds:
        q = flag_quality(margin, is_fn, threshold=float(t))
        rows.append({"threshold": float(t), "flagged_fraction": q["flagged_fraction"],
                     "precision": q["precision"], "recall": q["recall"], "is_fnd": float(t) == 0.0})
    return pd.DataFrame(rows)


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties) of two equal-length arrays."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"need two arrays of one length >= 2, got {x.shape} and {y.shape}")
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def calibration_table(true_affinity, teacher_score, n_bins: int = 10) -> pd.DataFrame:
    """Teacher score against true affinity: equal-count bins of true affinity, each with its mean
    true affinity, the mean and std of the teacher's scores, and the count."""
    a = np.asarray(true_affinity, dtype=np.float64).ravel()
    s = np.asarray(teacher_score, dtype=np.float64).ravel()
    if a.shape != s.shape or a.size == 0:
        raise ValueError(f"true_affinity and teacher_score must be non-empty and of one length, got "
                         f"{a.shape} and {s.shape}")
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins={n_bins!r} must be a positive integer")
    order = np.argsort(a, kind="stable")
    rows = []
    for i, idx in enumerate(np.array_split(order, min(n_bins, a.size))):
        rows.append({"bin": i, "true_affinity": float(a[idx].mean()), "teacher_score": float(s[idx].mean()),
                     "teacher_score_std": float(s[idx].std()), "n": int(idx.size)})
    return pd.DataFrame(rows)


def student_table(metrics: dict[str, dict], baseline: str = "student_npair") -> pd.DataFrame:
    """One row per trained student (``{stage: metrics.json}``): objective, α, negatives, test AUC
    per protocol, gain over ``baseline`` (same protocol), epochs to best / run, whether it stopped
    on its own, and its fixed-budget AUC where recorded (``budget_epochs``)."""
    rows = []
    for stage, m in metrics.items():
        for protocol, t in m.get("test", {}).items():
            row = {"stage": stage, "loss": m.get("loss"), "protocol": protocol, "auc": t["auc"],
                   "ndcg_lpae": t["ndcg_lpae"], "best_epoch": m.get("best_epoch"),
                   "epochs_run": m.get("epochs_run"), "stopped_early": m.get("stopped_early"),
                   "params": m.get("params_inference", m.get("params"))}
            budget = m.get("budget")
            if budget:
                row[f"auc_at_{budget['epochs']}_epochs"] = budget["test"].get(protocol, {}).get("auc")
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    base = df[df["stage"] == baseline].set_index("protocol")["auc"]
    df["gain_over_npair"] = [a - base[p] if p in base.index else np.nan for a, p in zip(df["auc"], df["protocol"])]
    return df.sort_values(["protocol", "auc"], ascending=[True, False]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# sampling and scoring


def sample_negatives(dataset: OutfitDataset, n_per_positive: int = 4, seed: int = 0,
                     max_positives: int | None = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Random-mixture negatives as the per-pair training sampler draws them: ``n_per_positive``
    for each training positive (at most ``max_positives`` of them, chosen at random). Returns
    users [M] and items [M, S] (M = positives × n_per_positive)."""
    train = dataset.outfits_of("train")
    rng = np.random.default_rng([seed, 8])
    if max_positives is not None and train.size > max_positives:
        train = np.sort(rng.choice(train, size=max_positives, replace=False))
    users = dataset.outfit_user[train]
    sampler = NegativeSampler(dataset, n_negatives=n_per_positive, seed=seed, mode="per_pair")
    negatives = sampler.sample(dataset.outfit_items[train], users, epoch=0, step=0)
    return np.repeat(users, n_per_positive), negatives.reshape(-1, dataset.n_slots)


def negative_table(teacher: OutfitModel, dataset: OutfitDataset, users: np.ndarray, items: np.ndarray,
                   device: str = "cpu", signal=None) -> pd.DataFrame:
    """One row per (user, negative): the teacher's score r̂_ijk, the user's positive boundary r̂_i
    (eq. 11), margin = r̂_i − r̂_ijk (d = α · margin), the true affinity and whether it is a true
    false negative. ``signal``: a ready :func:`~fndkit.objectives.prepare_teacher` result."""
    if dataset.truth is None:
        raise StageError(_NO_TRUTH.format(name=dataset.name))
    signal = signal or prepare_teacher(teacher, dataset, device=device)
    scores = signal.model.score_cached(users, items, signal.cache).double().cpu().numpy()
    boundary = signal.user_mean.double().cpu().numpy()[users]
    return pd.DataFrame({"user": users, "teacher_score": scores, "boundary": boundary,
                         "margin": boundary - scores,
                         "true_affinity": dataset.truth.true_affinity(users, items),
                         "is_fn": dataset.truth.is_false_negative(users, items)})


def strength_table(run: RunFolder, teacher: str, users: np.ndarray, items: np.ndarray,
                   device: str = "cpu") -> pd.DataFrame:
    """Flag quality of the teacher after each snapshot epoch (and of its best checkpoint): epoch,
    val_auc, flagged_fraction, precision, recall. Empty when the teacher kept no snapshots."""
    ds = run.dataset()
    is_fn = ds.truth.is_false_negative(users, items)
    rows = []
    for epoch, path in run.snapshots(teacher).items():
        model, payload = run.load_model(str(path), device=device)
        t = negative_table(model, ds, users, items, device)
        rows.append({"epoch": epoch, "val_auc": payload["metrics"].get("val_auc"), "checkpoint": "snapshot",
                     **{k: v for k, v in flag_quality(t["margin"], is_fn).items() if k != "n"}})
    return pd.DataFrame(rows)


_NO_TRUTH = ("dataset {name!r} has no ground truth: the false-negative lab needs the built-in "
             "synthetic benchmark (00_data with source='synthetic'), whose generator knows every "
             "user's taste")


# --------------------------------------------------------------------------------------------
# the stage


def run(run_dir: str | os.PathLike, teacher: str = TEACHER, alphas: Iterable[float] = ALPHAS,
        alpha: float | None = None, n_per_positive: int = 4, max_positives: int | None = 4000,
        seed: int = 0, device: str = "auto") -> dict:
    """The teacher diagnostics for a run folder; writes ``false_negatives/config.json`` and
    ``metrics.json``.

    Returns ``{"metrics": …, "negatives": DataFrame (negative_table), "alphas": alpha_table,
    "pr": flag_pr_curve, "calibration": calibration_table, "strength": strength_table,
    "students": student_table}``. ``alpha``: the one whose d the distributions show (None: the
    paper's for this dataset). Like the explorer this is an analysis, not a run: it trains nothing,
    takes seconds, and is recomputed (and its two files rewritten) on every call, so the students
    table follows the run folder.
    """
    run = RunFolder(run_dir)
    ds = run.dataset()
    if ds.truth is None:
        raise StageError(_NO_TRUTH.format(name=ds.name))
    alphas = [float(a) for a in alphas]
    if alpha is None:
        alpha = run.paper_defaults()["alpha"]
    if not float(alpha) > 0 or not all(a > 0 for a in alphas):
        raise ValueError(f"alpha={alpha!r} and alphas={alphas!r} must be > 0 (eq. 12)")
    if not isinstance(n_per_positive, int) or n_per_positive < 1:
        raise ValueError(f"n_per_positive={n_per_positive!r} must be an integer >= 1")
    if max_positives is not None:
        check_int("max_positives", max_positives, 1, ", or None for all")
    device = resolve_device(device)
    config = {"teacher": teacher, "alphas": alphas, "alpha": float(alpha), "n_per_positive": n_per_positive,
              "max_positives": max_positives, "seed": seed, "dataset_fingerprint": ds.fingerprint()}

    users, items = sample_negatives(ds, n_per_positive, seed, max_positives)
    model, _ = run.load_model(teacher, device=device)
    negatives = negative_table(model, ds, users, items, device)
    negatives["d"] = float(alpha) * negatives["margin"]
    quality = flag_quality(negatives["margin"], negatives["is_fn"])
    calibration = calibration_table(negatives["true_affinity"], negatives["teacher_score"])
    students = student_table({s: run.read_metrics(s) for s in run.trained_models()
                              if s != teacher and s.startswith("student") and run.metrics_path(s).exists()})
    strength = strength_table(run, teacher, users, items, device)
    best = run.read_metrics(teacher) if run.metrics_path(teacher).exists() else {}
    strength = pd.concat([strength, pd.DataFrame([{
        "epoch": best.get("best_epoch"), "val_auc": best.get("best_val_auc"), "checkpoint": "best",
        **{k: v for k, v in quality.items() if k != "n"}}])], ignore_index=True)
    result = {"negatives": negatives, "alphas": alpha_table(negatives["margin"], negatives["is_fn"], alphas),
              "pr": flag_pr_curve(negatives["margin"], negatives["is_fn"]), "calibration": calibration,
              "strength": strength, "students": students}
    metrics = {"teacher": teacher, "alpha": float(alpha), "sampled_negatives": quality["n"],
               "true_fn_fraction": quality["true_fn_fraction"],
               "flagged_fraction": quality["flagged_fraction"], "flag_precision": quality["precision"],
               "flag_recall": quality["recall"],
               "d_true_fn_mean": _mean(negatives["d"][negatives["is_fn"]]),
               "d_true_negative_mean": _mean(negatives["d"][~negatives["is_fn"]]),
               "teacher_true_affinity_spearman": rank_correlation(negatives["true_affinity"],
                                                                  negatives["teacher_score"]),
               "strength": strength.to_dict("records"),
               "students": students.to_dict("records")}
    write_json(run.path(FALSE_NEGATIVES, "config.json"), {**config, "run_dir": str(run.root)})
    run.write_metrics(FALSE_NEGATIVES, metrics)
    result["metrics"] = metrics
    return result


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else float("nan")


@dataclass(frozen=True)
class Params(StageParams):
    """notebooks/08_false_negatives's parameters cell."""

    kind: ClassVar[str] = "false_negatives"
    notebook: ClassVar[str] = "08_false_negatives"

    run_dir: str = "outputs/demo"
    teacher: str = TEACHER
    alpha: float | None = None
    alphas: list = field(default_factory=lambda: list(ALPHAS))
    n_per_positive: int = 4
    max_positives: int | None = 4000
    seed: int = 0
    device: str = "auto"


def _identity(folder: RunFolder, params: Params) -> dict:
    """What the lab's result is: its parameters (not where or on which device) and the models it
    read (the teacher and the students of its table)."""
    students = [s for s in folder.trained_models() if s != params.teacher and s.startswith("student")]
    return jsonable({**{k: v for k, v in params.to_dict().items() if k not in ("run_dir", "device")},
                     "inputs": folder.inputs_of([params.teacher, *students])})


def execute_full(params: Params) -> dict:
    """08_false_negatives for ``params``: everything :func:`run` returns (tables included); always
    computed (the notebook shows the tables), under the folder's claim."""
    seed_everything(params.seed)
    folder = RunFolder(params.run_dir)
    with folder.claimed(FALSE_NEGATIVES):  # one writer of its two files
        result = run(params.run_dir, teacher=params.teacher, alphas=params.alphas, alpha=params.alpha,
                     n_per_positive=params.n_per_positive, max_positives=params.max_positives, seed=params.seed,
                     device=params.device)
        config = folder.read_config(FALSE_NEGATIVES)
        write_json(folder.path(FALSE_NEGATIVES, "config.json"), {**config, "identity": _identity(folder, params)})
    return result


def execute(params: Params, progress: bool = True) -> dict:
    """08_false_negatives for ``params``; returns the metrics it writes. A finished result with the
    same parameters and the same models read is reused."""
    folder = RunFolder(params.run_dir)
    with folder.claimed(FALSE_NEGATIVES):
        if (folder.metrics_path(FALSE_NEGATIVES).exists()
                and folder.read_config(FALSE_NEGATIVES).get("identity") == _identity(folder, params)):
            print(f"{folder.stage_dir(FALSE_NEGATIVES)} already holds this result; reusing it")
            return folder.read_metrics(FALSE_NEGATIVES)
        return execute_full(params)["metrics"]
