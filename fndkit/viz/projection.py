"""The teacher's user-outfit space (paper §4.9, Figs. 1 and 8) as pure computation, no widgets.

Three steps, each usable alone:

* :func:`gather_space` — a model -> L2-normalised user and outfit vectors of chosen users, each
  outfit flagged by the frozen teacher: its *positive boundary* r̂_i (eq. 11, the teacher's mean
  score over the user's training positives) and false-negativeness d = α(r̂_i − r̂_ijk) (eq. 12).
  A negative with d < 0 lies inside the boundary: FND pulls it instead of pushing it.
* :func:`project` — vectors [n, d] -> 2-D coordinates [n, 2] with t-SNE (scikit-learn), UMAP
  (umap-learn) or PCA; seeded, with clear errors for impossible parameters.
* :func:`space_frame` — both joined into one tidy DataFrame, the projection cached per (model,
  users, method, parameters), so switching back and forth in the explorer does not recompute.

Shown per user, as in Fig. 8: the user (kind ``user``), their training positives (``positive``),
``n_negatives`` random mixtures drawn like training negatives from the train split (``negative``),
and their held-out test outfits placed among the negatives (``held_out``): the paper notes that a
test positive "can appear as a negative sample by pure chance in the training step". Our sampler
rejects every known positive, so that chance is zero here; the held-out outfits are added on
purpose to show where the teacher puts them.

:func:`load_run_models` reads the models from a run folder; :func:`top_k_outfits` ranks a user's
evaluation candidates for the outfit gallery.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
import pandas as pd
import torch

from ..artifacts import read_json
from ..config import DEFAULT_ALPHA, check_int
from ..data.sampling import category_pools, positive_hashes, random_mixtures
from ..data.schema import OutfitDataset
from ..evaluate import encode_candidates, score_rows
from ..losses import false_negative_weights, positive_boundary
from ..models.recommender import OutfitRecommender
from ..rundir import TEACHER, RunFolder, StageError

KINDS = ("user", "positive", "negative", "held_out")
METHODS = ("tsne", "umap", "pca")
FRAME_COLUMNS = ("point", "kind", "user", "outfit", "items", "x", "y", "teacher_score",
                 "student_score", "model_score", "positive_boundary", "d_weight", "inside_boundary",
                 "flagged_false_negative", "is_held_out_positive", "truth_positive", "true_affinity")


# --------------------------------------------------------------------------------------------
# flags (eqs. 11-12) on plain arrays


def false_negative_flags(teacher_scores: np.ndarray, boundary: np.ndarray, alpha: float,
                         is_negative: np.ndarray) -> dict[str, np.ndarray]:
    """Per outfit point: d_weight (eq. 12), inside_boundary, flagged_false_negative.

    teacher_scores: [M] r̂_ijk of each outfit for its own user; boundary: [M] r̂_i of that user;
    is_negative: [M] bool (sampled negatives and held-out positives placed among them).
    ``inside_boundary`` = d < 0 (the teacher scores the outfit above the user's mean positive);
    ``flagged_false_negative`` = inside and a negative: what FND pulls instead of pushing.
    d comes from :func:`fndkit.losses.false_negative_weights`, the function training uses.
    """
    scores = torch.as_tensor(np.asarray(teacher_scores, dtype=np.float64))
    r_hat = torch.as_tensor(np.asarray(boundary, dtype=np.float64))
    if scores.ndim != 1 or scores.shape != r_hat.shape:
        raise ValueError(f"teacher_scores and boundary must both be [M], got "
                         f"{tuple(scores.shape)} and {tuple(r_hat.shape)}")
    d = false_negative_weights(scores[:, None], r_hat, alpha)[:, 0].numpy()
    inside = d < 0
    return {"d_weight": d, "inside_boundary": inside,
            "flagged_false_negative": inside & np.asarray(is_negative, dtype=bool)}


# --------------------------------------------------------------------------------------------
# users


def farthest_point_order(vectors: np.ndarray, start: int, k: int) -> list[int]:
    """Greedy farthest-point sampling by cosine: ``k`` row indices of ``vectors`` [n, d],
    beginning with ``start``; each next row has the lowest maximum cosine to those chosen
    (ties: the lowest index)."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    chosen = [int(start)]
    closest = v @ v[start]
    for _ in range(min(k, len(v)) - 1):
        closest_masked = closest.copy()
        closest_masked[chosen] = np.inf
        nxt = int(np.argmin(closest_masked))
        chosen.append(nxt)
        closest = np.maximum(closest, v @ v[nxt])
    return chosen


def eligible_users(dataset: OutfitDataset) -> np.ndarray:
    """Trained users with at least one training positive (sorted ids)."""
    train = dataset.outfits_of("train")
    has = np.bincount(dataset.outfit_user[train], minlength=dataset.n_users) > 0
    return np.flatnonzero(has & (dataset.user_pool == 0))


def default_users(dataset: OutfitDataset, model, k: int = 3) -> list[int]:
    """Three users as in Fig. 8, whose clusters should sit apart: among trained users with
    training and test outfits, the one with the most training positives, then greedily the user
    least similar (cosine of ``model``'s user embeddings) to those already picked."""
    train, test = dataset.outfits_of("train"), dataset.outfits_of("test")
    n_train = np.bincount(dataset.outfit_user[train], minlength=dataset.n_users)
    n_test = np.bincount(dataset.outfit_user[test], minlength=dataset.n_users)
    pool = np.flatnonzero((n_train > 0) & (n_test > 0) & (dataset.user_pool == 0))
    if pool.size == 0:
        pool = eligible_users(dataset)
    if pool.size == 0:
        raise ValueError(f"dataset {dataset.name!r} has no trained user with training outfits")
    with torch.no_grad():
        vecs = model.user_vectors(torch.as_tensor(pool, device=model.device)).float().cpu().numpy()
    start = int(np.argmax(n_train[pool]))  # argmax takes the first (lowest id) on ties
    return [int(pool[i]) for i in farthest_point_order(vecs, start, k)]


def check_users(dataset: OutfitDataset, users: Sequence[Any]) -> list[int]:
    """``users`` as a sorted list of distinct ints, or ValueError naming the bad ids."""
    valid = eligible_users(dataset)
    out = []
    for u in users:
        if isinstance(u, bool) or not isinstance(u, (int, np.integer)):
            raise ValueError(f"users must be integer user ids, got {u!r} in {list(users)!r}")
        out.append(int(u))
    bad = sorted(set(out) - set(valid.tolist()))
    if bad:
        shown = valid[:20].tolist()
        raise ValueError(f"users {bad} are not trained users with training outfits in dataset "
                         f"{dataset.name!r}; pick from {shown}{' …' if valid.size > 20 else ''} "
                         f"({valid.size} users), or pass users=[] for three picked as in Fig. 8")
    if not out:
        raise ValueError("users is empty; pass user ids, or use default_users(dataset, model)")
    return sorted(set(out))


# --------------------------------------------------------------------------------------------
# gather: models -> vectors + flags


@dataclass(eq=False)
class SpaceData:
    """What :func:`gather_space` collects; ``frame`` has every :data:`FRAME_COLUMNS` but x, y.

    vectors: float32 [n, d] L2-normalised vectors of the shown model (users first, then outfits);
    items: int64 [n, S] outfit rows (-1 everywhere for user points); key: hashable identity of
    everything that went in (used by the projection cache).
    """

    vectors: np.ndarray
    items: np.ndarray
    frame: pd.DataFrame
    users: list[int]
    key: tuple


def _items_text(items: np.ndarray) -> list[str]:
    return [" ".join(str(int(i)) for i in row) if (row >= 0).any() else "" for row in items]


def parse_items(text: str) -> np.ndarray:
    """Inverse of the ``items`` column: "12 40 -1" -> int64 [S]."""
    return np.array([int(t) for t in str(text).split()], dtype=np.int64)


@torch.no_grad()
def _model_vectors(model, dataset: OutfitDataset, users: np.ndarray, items: np.ndarray,
                   device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """User vectors [U, d] and outfit vectors [M, d] of ``model`` (items encoded once)."""
    model.eval()
    outfit_vecs = encode_candidates(model, dataset, items, device=device).float().cpu()
    user_vecs = model.user_vectors(torch.as_tensor(users, device=model.device)).float().cpu()
    return user_vecs, outfit_vecs


def _own_scores(user_vecs: torch.Tensor, user_rows: np.ndarray, outfit_vecs: torch.Tensor) -> np.ndarray:
    """Cosine (eq. 9) of each outfit with its own user: [M]."""
    return OutfitRecommender.score(user_vecs[torch.as_tensor(user_rows)], outfit_vecs).double().numpy()


def gather_space(dataset: OutfitDataset, model, users: Sequence[int], teacher=None, student=None,
                 n_negatives: int = 40, n_held_out: int | None = None,
                 max_positives: int | None = None, alpha: float = DEFAULT_ALPHA, seed: int = 0,
                 device: str = "cpu", model_key: Hashable | None = None) -> SpaceData:
    """Vectors and flags of the user-outfit space of ``model`` for ``users`` (Fig. 8).

    model: the :class:`~fndkit.models.recommender.OutfitRecommender` whose space is shown;
    teacher: the frozen teacher that flags (default: ``model``); student: optional, for
    ``student_score``. Per user: their training positives (at most ``max_positives``, seeded;
    r̂_i always uses all of them), ``n_negatives`` random mixtures of the train split laid out like
    their positives (seeded per (seed, user), so adding a user leaves the others' draws alone), and
    ``n_held_out`` of their test outfits (None: all) placed among the negatives.
    Ground truth (``truth_positive``, ``true_affinity``) is filled on the built-in benchmark and
    left empty (NA / NaN) otherwise. model_key: hashable identity of the models for caching
    (default: their ``id``).
    """
    users = check_users(dataset, users)
    for name, value in (("n_negatives", n_negatives), ("seed", seed)):
        check_int(name, value, 0, error=ValueError)
    for name, value in (("n_held_out", n_held_out), ("max_positives", max_positives)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 0):
            raise ValueError(f"{name}={value!r} must be None (all) or an integer >= 0")
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r} must be > 0 (distillation scaling, eq. 12)")
    teacher = model if teacher is None else teacher

    train, test = dataset.outfits_of("train"), dataset.outfits_of("test")
    pools, reject = category_pools(dataset, "train"), positive_hashes(dataset)
    kinds, owners, outfit_ids, rows = [], [], [], []
    all_pos_items, all_pos_users = [], []
    for u in users:
        rng = np.random.default_rng([seed, u])
        mine = train[dataset.outfit_user[train] == u]
        all_pos_items.append(dataset.outfit_items[mine])
        all_pos_users.append(np.full(mine.size, u))
        shown = mine
        if max_positives is not None and mine.size > max_positives:
            shown = np.sort(rng.choice(mine, size=max_positives, replace=False))
        templates = dataset.outfit_items[mine[rng.integers(mine.size, size=n_negatives)]]
        negatives = random_mixtures(dataset, templates, "train", rng, reject=reject, pools=pools)
        held = test[dataset.outfit_user[test] == u]
        if n_held_out is not None and held.size > n_held_out:
            held = np.sort(rng.choice(held, size=n_held_out, replace=False))
        for kind, ids, items in (("positive", shown, dataset.outfit_items[shown]),
                                 ("negative", np.full(n_negatives, -1), negatives),
                                 ("held_out", held, dataset.outfit_items[held])):
            kinds += [kind] * len(ids)
            owners.append(np.full(len(ids), u))
            outfit_ids.append(np.asarray(ids, dtype=np.int64))
            rows.append(np.asarray(items, dtype=np.int64).reshape(-1, dataset.n_slots))
    items = np.concatenate(rows)
    owner = np.concatenate(owners).astype(np.int64)
    user_arr = np.asarray(users, dtype=np.int64)
    user_row = np.searchsorted(user_arr, owner)  # users is sorted

    pos_items, pos_users = np.concatenate(all_pos_items), np.concatenate(all_pos_users)
    pos_rows = np.searchsorted(user_arr, pos_users)

    # the teacher's flags: r̂_i over every training positive (eq. 11), d per shown outfit (eq. 12);
    # shown outfits and positives go through the teacher together, so each item is encoded once
    t_user, t_all = _model_vectors(teacher, dataset, user_arr, np.concatenate([items, pos_items]), device)
    t_outfit, t_pos = t_all[:len(items)], t_all[len(items):]
    teacher_score = _own_scores(t_user, user_row, t_outfit)
    r_hat_users = positive_boundary(_own_scores(t_user, pos_rows, t_pos), pos_rows, len(users))
    boundary = r_hat_users[user_row]

    # the shown model's space
    if model is teacher:
        user_vecs, outfit_vecs = t_user, t_outfit
    else:
        user_vecs, outfit_vecs = _model_vectors(model, dataset, user_arr, items, device)
    model_score = _own_scores(user_vecs, user_row, outfit_vecs)
    vectors = torch.nn.functional.normalize(torch.cat([user_vecs, outfit_vecs]), dim=1).numpy()
    kind = np.asarray(kinds, dtype=object)
    flags = false_negative_flags(teacher_score, boundary, alpha, kind != "positive")

    if student is not None:
        s_user, s_outfit = _model_vectors(student, dataset, user_arr, items, device)
        student_score = _own_scores(s_user, user_row, s_outfit)
    else:
        student_score = np.full(len(items), np.nan)
    truth = dataset.truth
    if truth is not None:
        true_affinity = truth.true_affinity(owner, items)
        truth_positive = pd.array(true_affinity >= truth.false_negative_threshold, dtype="boolean")
    else:
        true_affinity = np.full(len(items), np.nan)
        truth_positive = pd.array([pd.NA] * len(items), dtype="boolean")

    n_u = len(users)
    nan_u = np.full(n_u, np.nan)
    frame = pd.DataFrame({
        "point": np.arange(n_u + len(items)),
        "kind": np.concatenate([np.full(n_u, "user", dtype=object), kind]),
        "user": np.concatenate([user_arr, owner]),
        "outfit": np.concatenate([np.full(n_u, -1), np.concatenate(outfit_ids)]),
        "items": [""] * n_u + _items_text(items),
        "teacher_score": np.concatenate([nan_u, teacher_score]),
        "student_score": np.concatenate([nan_u, student_score]),
        "model_score": np.concatenate([nan_u, model_score]),
        "positive_boundary": np.concatenate([r_hat_users, boundary]),
        "d_weight": np.concatenate([nan_u, flags["d_weight"]]),
        "inside_boundary": np.concatenate([np.zeros(n_u, bool), flags["inside_boundary"]]),
        "flagged_false_negative": np.concatenate([np.zeros(n_u, bool), flags["flagged_false_negative"]]),
        "is_held_out_positive": np.concatenate([np.zeros(n_u, bool), kind == "held_out"]),
        "truth_positive": pd.concat([pd.Series(pd.array([pd.NA] * n_u, dtype="boolean")),
                                     pd.Series(truth_positive)], ignore_index=True),
        "true_affinity": np.concatenate([nan_u, true_affinity]),
    })
    all_items = np.concatenate([np.full((n_u, dataset.n_slots), -1, dtype=np.int64), items])
    key = (model_key if model_key is not None else (id(model), id(teacher), id(student)),
           dataset.fingerprint(), tuple(users), n_negatives, n_held_out, max_positives,
           float(alpha), seed)
    return SpaceData(vectors=vectors.astype(np.float32), items=all_items, frame=frame,
                     users=list(users), key=key)


# --------------------------------------------------------------------------------------------
# project: vectors -> 2-D


def check_projection(method: str, n_points: int, perplexity: float = 15, n_neighbours: int = 15) -> None:
    """ValueError naming the bad value and the fix, before scikit-learn / umap would fail deep inside."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}")
    if n_points < 3:
        raise ValueError(f"need at least 3 points to project, got {n_points}; show more users "
                         f"or negatives")
    if method == "tsne" and not 0 < perplexity < n_points:
        raise ValueError(f"perplexity={perplexity!r} must be > 0 and smaller than the number of "
                         f"points ({n_points}); lower perplexity or show more users / negatives")
    if method == "umap" and (isinstance(n_neighbours, bool) or not isinstance(n_neighbours, (int, np.integer))
                             or not 2 <= n_neighbours < n_points):
        raise ValueError(f"n_neighbours={n_neighbours!r} must be an integer from 2 to the number "
                         f"of points - 1 ({n_points - 1}); lower it or show more users / negatives")


def project(vectors: np.ndarray, method: str = "tsne", perplexity: float = 15,
            n_neighbours: int = 15, seed: int = 0) -> np.ndarray:
    """2-D coordinates [n, 2] of vectors [n, d].

    ``tsne``: :class:`sklearn.manifold.TSNE` (PCA init, Euclidean distance, which on unit vectors
    orders pairs like the cosine of eq. 9); ``umap``: :class:`umap.UMAP` with ``n_neighbours``
    (first import ~20 s of numba compilation); ``pca``: :class:`sklearn.decomposition.PCA`.
    Seeded by ``seed``.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"vectors must be [n, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors hold NaN or infinite values; check the model's checkpoint")
    check_projection(method, x.shape[0], perplexity, n_neighbours)
    from threadpoolctl import threadpool_limits

    # One thread: once torch has run, its OpenMP/BLAS worker threads and scikit-learn's compete for
    # the same cores and t-SNE of 40 points slows from 0.3 s to 40 s on a 2-core machine; for
    # the few hundred points shown here a single thread is fastest anyway (and bit-reproducible).
    with threadpool_limits(limits=1):
        return _fit_projection(x, method, perplexity, n_neighbours, seed)


def _fit_projection(x: np.ndarray, method: str, perplexity: float, n_neighbours: int,
                    seed: int) -> np.ndarray:
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=float(perplexity), init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(x)
    try:
        import umap
    except ImportError as exc:  # an optional dependency (pyproject extra "umap")
        raise ValueError("method='umap' needs umap-learn (pip install -r requirements.txt); "
                         "use method='tsne' or 'pca'") from exc
    reducer = umap.UMAP(n_components=2, n_neighbors=int(n_neighbours), random_state=seed,
                        n_jobs=1)  # seeded UMAP runs single-threaded anyway; saying so silences a warning
    return np.asarray(reducer.fit_transform(x), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# both, cached

_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
CACHE_SIZE = 64


def projection_key(space_key: tuple, method: str, perplexity: float, n_neighbours: int, seed: int) -> tuple:
    """Cache key with only the parameters ``method`` uses (PCA ignores perplexity, …)."""
    param = {"tsne": float(perplexity), "umap": int(n_neighbours), "pca": None}.get(method)
    return (space_key, method, param, int(seed))


def clear_projection_cache() -> None:
    _CACHE.clear()


def cached_projection(space: SpaceData, method: str = "tsne", perplexity: float = 15,
                      n_neighbours: int = 15, seed: int = 0) -> np.ndarray:
    """:func:`project` of ``space.vectors``, computed once per (space, method, parameters, seed)."""
    check_projection(method, len(space.vectors), perplexity, n_neighbours)
    key = projection_key(space.key, method, perplexity, n_neighbours, seed)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    xy = project(space.vectors, method, perplexity, n_neighbours, seed)
    xy.setflags(write=False)
    _CACHE[key] = xy
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return xy


def space_frame(space: SpaceData, method: str = "tsne", perplexity: float = 15,
                n_neighbours: int = 15, seed: int = 0) -> pd.DataFrame:
    """The tidy table: one row per point, columns :data:`FRAME_COLUMNS` (x, y from ``method``),
    with ``method`` and its parameters in ``frame.attrs``."""
    xy = cached_projection(space, method, perplexity, n_neighbours, seed)
    frame = space.frame.copy()
    frame["x"], frame["y"] = xy[:, 0], xy[:, 1]
    frame = frame[list(FRAME_COLUMNS)]
    frame.attrs = {"method": method, "perplexity": perplexity, "n_neighbours": n_neighbours,
                   "seed": seed, "users": list(space.users)}
    return frame


def flag_counts(frame: pd.DataFrame) -> dict[str, dict]:
    """Per shown user: how many negatives the teacher flags (d < 0), how many of those are the
    user's held-out positives, how many the ground truth calls positive (None without truth).

    Keys are user ids as strings (JSON-ready).
    """
    out = {}
    for u, rows in frame[frame["kind"] != "user"].groupby("user", sort=True):
        neg = rows[rows["kind"] != "positive"]
        flagged = neg[neg["flagged_false_negative"]]
        has_truth = not neg["truth_positive"].isna().all()
        out[str(int(u))] = {
            "positives": int((rows["kind"] == "positive").sum()),
            "negatives": int((neg["kind"] == "negative").sum()),
            "held_out_shown": int(neg["is_held_out_positive"].sum()),
            "flagged": int(len(flagged)),
            "flagged_held_out": int(flagged["is_held_out_positive"].sum()),
            "flagged_truth_positive": int(flagged["truth_positive"].fillna(False).sum()) if has_truth else None,
            "truth_positive_negatives": int(neg["truth_positive"].fillna(False).sum()) if has_truth else None,
            "positive_boundary": float(rows["positive_boundary"].iloc[0]),
        }
    return out


# --------------------------------------------------------------------------------------------
# run folder and gallery


@dataclass
class RunModels:
    """Dataset and models of one run folder, as the explorer needs them."""

    dataset: OutfitDataset
    model: Any
    teacher: Any
    student: Any | None
    model_name: str
    student_name: str | None
    alpha: float
    keys: dict


def load_run_models(run_dir: str | Path, model: str = "teacher", student: str | None = "student_fnd",
                    device: str = "cpu") -> RunModels:
    """Load the dataset, the model to show, the teacher (always ``run_dir/teacher``, which flags)
    and, when its folder exists, the student. A missing student only leaves its scores empty;
    a missing data folder, teacher or model raises :class:`~fndkit.rundir.StageError` saying which
    notebook to run. α comes from the student's config when its loss uses one (FND, KD + FND …;
    else 1.25). Any student stage can be named: N-pair, FND, the distillation baselines."""
    for name, value in (("model", model), ("student", student)):
        if not (isinstance(value, str) or (name == "student" and value is None)):
            raise ValueError(f"{name}={value!r} must be the name of a stage folder such as 'teacher' or "
                             f"'student_fnd'{' (or None)' if name == 'student' else ''}")
    run = RunFolder(run_dir)
    dataset = run.dataset()
    loaded, keys = {}, {}

    def load(name: str):
        if name not in loaded:
            ckpt = run.checkpoint(name)
            loaded[name], _ = run.load_model(name, device=device)
            keys[name] = (str(ckpt.resolve()), ckpt.stat().st_mtime_ns)
        return loaded[name]

    teacher = load(TEACHER)
    shown = load(model)
    student_model, alpha = None, DEFAULT_ALPHA
    if student:
        try:
            student_model = load(student)
        except StageError as exc:
            print(f"no student scores: {exc}")
            student = None
        else:
            cfg_path = run.checkpoint(student).parent / "config.json"
            if cfg_path.exists():
                train_cfg = read_json(cfg_path).get("train", {})
                from ..stages.training import ALPHA_LOSSES   # (here: the projection module stays light to import)

                if train_cfg.get("loss") in ALPHA_LOSSES:   # fnd, kd-fnd …: the student's α weighed its d
                    alpha = float(train_cfg.get("alpha", DEFAULT_ALPHA))
    return RunModels(dataset, shown, teacher, student_model, model, student, alpha, keys)


def run_space(models: RunModels, users: Sequence[int] = (), n_negatives: int = 40,
              seed: int = 0, device: str = "cpu", **kwargs) -> SpaceData:
    """:func:`gather_space` for a :class:`RunModels` (users=[]: :func:`default_users` of the teacher)."""
    users = list(users) or default_users(models.dataset, models.teacher)
    key = (models.keys.get(models.model_name), models.keys.get("teacher"),
           models.keys.get(models.student_name) if models.student_name else None)
    return gather_space(models.dataset, models.model, users, teacher=models.teacher,
                        student=models.student, n_negatives=n_negatives, alpha=models.alpha,
                        seed=seed, device=device, model_key=key, **kwargs)


@torch.no_grad()
def top_k_outfits(dataset: OutfitDataset, model, user: int, k: int = 10, split: str = "test",
                  protocol: str = "random", student=None, device: str = "cpu") -> pd.DataFrame:
    """The ``k`` best-scored outfits of ``user``'s fixed evaluation candidates (``split``,
    ``protocol``): the lists AUC and NDCG rank, one held-out positive : ten negatives each.

    Returns columns rank (1 = best), items, score (``model``, eq. 9), student_score, label
    (1 = a held-out positive), true_affinity (NaN without ground truth); sorted by score.
    """
    cand = dataset.candidate_set(split, protocol)
    rows = np.flatnonzero(cand.user == int(user))
    if rows.size == 0:
        users = np.unique(cand.user)
        raise ValueError(f"user {user!r} has no {split}/{protocol} candidates; pick one of "
                         f"{users[:20].tolist()}{' …' if users.size > 20 else ''}")
    check_int("k", k, 1, error=ValueError)
    items = cand.items[rows]
    users = cand.user[rows]
    score = score_rows(model, dataset, users, items, device)
    student_score = (score_rows(student, dataset, users, items, device) if student is not None
                     else np.full(rows.size, np.nan))
    affinity = (dataset.truth.true_affinity(users, items) if dataset.truth is not None
                else np.full(rows.size, np.nan))
    order = np.argsort(-score, kind="stable")[:k]
    return pd.DataFrame({"rank": np.arange(1, order.size + 1), "items": _items_text(items[order]),
                         "score": score[order].astype(np.float64), "student_score": student_score[order],
                         "label": cand.label[rows][order].astype(int), "true_affinity": affinity[order]})
