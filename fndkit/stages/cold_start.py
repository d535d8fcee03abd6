"""05_cold_start: the Table-3 experiment — recommend to the cold-start pool with each trained
model and no training (paper §3.5, §4.3), using the neighbourhood maths of :mod:`fndkit.coldstart`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..coldstart import (STRATEGIES, ColdStartEpisodes, aggregate_user_vectors, aggregation_weights,
                         check_params, cold_start_protocol, released_split_protocol,
                         user_similarity_batched)
from ..data.sampling import build_candidates
from ..data.schema import CandidateSet
from ..evaluate import item_cache
from ..metrics import per_user_auc, ranking_metrics_all
from ..models.recommender import outfit_vectors_cached
from ..models.registry import MODELS, model_class
from ..repro import resolve_device
from ..artifacts import jsonable, write_json
from ..rundir import COLD_START, RunFolder, StageError
from .params import StageParams


COLD_SPLITS = ("auto", "released", "pooled")


def describe_cold_split(cold_split: str, ratio: int | None = None) -> str:
    """One sentence saying which cold-start protocol a result used (printed and reported)."""
    if cold_split == "released":
        return ("released split (Polyvore-53 / -32, LPAE's protocol): the n revealed outfits are drawn "
                "from each cold user's released training outfits; the user's released test outfits are "
                "ranked against the released test negatives (nega: random, nega_hard: hard)")
    return (f"pooled: the n revealed outfits are drawn from all of a cold user's outfits; each of the "
            f"others is ranked against {ratio if ratio is not None else 'ratio'} random mixtures drawn "
            f"over the cold split (fixed per seed)")


@dataclass
class ColdSetup:
    """What a cold-start run ranks: outfits a cold user may reveal, and per negative protocol one
    candidate block (a held-out positive, then its negatives) per held-out positive."""

    cold_split: str                                 # "released" or "pooled"
    revealable: np.ndarray                          # int64 [R, S]
    candidates: dict[str, CandidateSet]             # protocol -> blocks
    blocks: dict[str, int]                          # protocol -> block size (1 + ratio)
    users: np.ndarray                               # the cold users, sorted
    revealable_by_user: dict[int, np.ndarray]       # user -> rows of ``revealable``
    held_out_by_user: dict[int, np.ndarray] | None  # user -> block ids (released only)

    def episodes(self, n: int, repetitions: int, seed: int) -> ColdStartEpisodes:
        if self.held_out_by_user is None:   # pooled: a block per revealable outfit, same ids
            return cold_start_protocol(self.users.tolist(), self.revealable_by_user, n, repetitions, seed)
        return released_split_protocol(self.users.tolist(), self.revealable_by_user,
                                       self.held_out_by_user, n, repetitions, seed)


def _by_user(users: np.ndarray) -> dict[int, np.ndarray]:
    return {int(u): np.flatnonzero(users == u) for u in np.unique(users)}


def held_out_rows(setup: ColdSetup, samples, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """The candidate rows one repetition ranks for ``protocol``: every held-out block of the
    episodes ``samples`` (row indices into ``setup.candidates[protocol]``) and, per row, which
    episode (0..len(samples)-1) it belongs to. Every row of a Table-3 cell — the recommender's
    strategies, a baseline's own rule, a non-personalized model — ranks exactly these rows."""
    block = setup.blocks[protocol]
    test_blocks = np.concatenate([e.held_out_ids for e in samples])
    owner = np.concatenate([np.full(len(e.held_out_ids), i) for i, e in enumerate(samples)])
    return (test_blocks[:, None] * block + np.arange(block)).ravel(), np.repeat(owner, block)


class CandidateDigest:
    """A short fingerprint of the candidate rows a cell's repetitions ranked (in each row of the
    result as ``candidate_digest``): rows of one cell with the same digest were scored on the same
    held-out candidates."""

    def __init__(self):
        self._hash, self.rows = hashlib.sha1(), 0

    def add(self, rows_idx: np.ndarray) -> None:
        rows_idx = np.ascontiguousarray(rows_idx, dtype=np.int64)
        self._hash.update(rows_idx.tobytes() + b"|")
        self.rows += int(rows_idx.size)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:16]


def has_released_split(ds) -> bool:
    """Whether the cold pool came with a released split (Polyvore-U's cold subset): its training
    and test outfit ranges and the test negatives."""
    ranges = ds.meta.get("cold_outfit_ranges") or {}
    return {"train", "test"} <= set(ranges) and "cold/random" in ds.candidates


def cold_setup(ds, cold_split: str = "auto", seed: int = 0, ratio: int = 10) -> ColdSetup:
    """The episodes' material for ``cold_split``: ``"released"`` (the dataset's released split),
    ``"pooled"`` (every cold outfit, fresh random mixtures) or ``"auto"`` (released when the
    dataset has one: Polyvore-U read with a cold subset)."""
    if cold_split not in COLD_SPLITS:
        raise ValueError(f"cold_split={cold_split!r} is unknown; choose one of {COLD_SPLITS}")
    released = has_released_split(ds)
    if cold_split == "released" and not released:
        raise StageError("cold_split='released' needs a released cold-start split (Polyvore-U read "
                         "with cold_subset '53' or '32'); this dataset's cold pool has none: use "
                         "cold_split='pooled' (or 'auto')")
    if cold_split == "pooled" or not released:
        cold_ids = ds.outfits_of("cold")
        cand = build_candidates(ds, seed=seed, ratio=ratio, splits=("cold",), protocols=("random",))["cold/random"]
        block = ratio + 1
        if not np.array_equal(cand.items[::block], ds.outfit_items[cold_ids]):
            raise RuntimeError("cold candidates are not laid out one block per cold outfit")
        return ColdSetup("pooled", cand.items[::block], {"random": cand}, {"random": block},
                         np.unique(ds.outfit_user[cold_ids]), _by_user(ds.outfit_user[cold_ids]), None)
    ranges = ds.meta["cold_outfit_ranges"]
    train = np.arange(*ranges["train"])
    test = np.arange(*ranges["test"])
    candidates, blocks = {}, {}
    for protocol in ("random", "hard"):
        cand = ds.candidates.get(f"cold/{protocol}")
        if cand is None:
            continue
        block = len(cand) // max(test.size, 1)
        if (test.size == 0 or block * test.size != len(cand)
                or not np.array_equal(cand.items[::block], ds.outfit_items[test])
                or not np.array_equal(cand.user[::block], ds.outfit_user[test])):
            raise StageError(f"the released cold/{protocol} candidates are not one block per released "
                             f"cold test outfit; rebuild the run folder's data with 00_data")
        candidates[protocol], blocks[protocol] = cand, block
    users = np.unique(ds.outfit_user[np.concatenate([train, test])])
    revealable_by_user = _by_user(ds.outfit_user[train])
    held_out_by_user = _by_user(ds.outfit_user[test])
    empty = np.zeros(0, dtype=np.int64)
    return ColdSetup("released", ds.outfit_items[train], candidates, blocks, users,
                     {int(u): revealable_by_user.get(int(u), empty) for u in users},
                     {int(u): held_out_by_user.get(int(u), empty) for u in users})


def run(run_dir, models, n_interactions=(1, 5), repetitions: int = 10, delta: float = 0.0, tau: float = 0.2,
        seed: int = 0, curve_interactions=(1, 2, 5, 10), device: str = "auto", ratio: int = 10,
        progress: bool = True, cold_split: str = "auto") -> dict:
    """Recommend to the cold-start pool with each trained model and no training (paper §4.3).

    For every repetition and cold user, ``n`` outfits are revealed (J_c^+) and held-out positives
    are ranked against negatives, following ``cold_split`` (:func:`cold_setup`): on a released
    split (Polyvore-53 / -32; ``"auto"`` picks it when present) the revealed outfits come from the
    user's released training outfits and the released test outfits are ranked against the
    released test negatives — random (``nega``) and, when released, hard (``nega_hard``); on a
    pool without one (``"pooled"``, the synthetic benchmark's) ``n`` of the user's outfits are
    revealed and each other one is ranked against ``ratio`` random-mixture negatives (fixed per
    seed, the main protocol's sampler over the cold split). Scores come from eqs. 20–24 by
    strategy; the reference rows cost nothing: ``population`` (every trained user, equal weights)
    and ``nearest`` (the single most similar user). ``models``: stage folders, no default (the
    notebook's list is :class:`Params`'s; :func:`execute` keeps those present); a model missing
    from the run folder raises. The other defaults are :class:`Params`'s (a test holds them
    equal). Returns ``{"rows": [...], "skipped": {n: count}, "cold_split",
    "cold_split_description", ...}`` where each row holds model, protocol, strategy,
    n_interactions, the mean and std over repetitions of AUC and NDCG, and ``candidate_digest`` /
    ``candidate_rows``: every row of a cell (protocol, n) — recommender strategies, a baseline's
    own rules, non-personalized models — ranks the same held-out candidates, and shows it.
    """
    check_params("w-avg", delta, tau)
    run = RunFolder(run_dir)
    ds = run.dataset()
    cold_ids = ds.outfits_of("cold")
    if cold_ids.size == 0:
        raise StageError(f"the dataset in {run.root} has no cold-start pool; regenerate it (synthetic "
                         f"data always has one) or read Polyvore-U with cold_subset='53' / '32'")
    if not (isinstance(models, str) or (isinstance(models, (list, tuple))
                                        and all(isinstance(m, str) for m in models))):
        raise StageError(f"models={models!r} must be a list of stage folder names, e.g. "
                         f"['teacher', 'student_fnd']")
    models = [models] if isinstance(models, str) else list(models)
    for name, values in (("n_interactions", n_interactions), ("curve_interactions", curve_interactions)):
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in values):
            raise ValueError(f"{name}={values!r} must be a list of integers >= 1 (outfits a cold user "
                             f"reveals), e.g. [1, 5]")
    available = run.trained_models()
    unknown = [m for m in models if m not in available]
    if unknown:
        raise StageError(f"models {unknown} are not trained in {run.root}; available: {available}")
    counts = sorted(set(int(n) for n in (*n_interactions, *curve_interactions)))
    device = resolve_device(device)
    setup = cold_setup(ds, cold_split, seed=seed, ratio=ratio)
    cold_users = setup.users
    every_row = np.concatenate([setup.revealable, *(c.items for c in setup.candidates.values())])
    trained = ds.trained_users
    rows, skipped = [], {}
    check_cold_start_support(run, models)
    for name in models:
        model, _ = run.load_model(name, device=device)
        cache = item_cache(model, ds, every_row, device)
        if not hasattr(model, "user_vectors"):   # a baseline: its own rule, or none needed
            rows += baseline_rows(name, model, cache, setup, trained, counts, repetitions, seed, skipped,
                                  progress)
            continue
        vecs = torch.nn.functional.normalize(outfit_vectors_cached(model, every_row, cache), dim=-1)
        pos_vecs, start = vecs[:len(setup.revealable)], len(setup.revealable)
        cand_vecs = {}
        for protocol, cand in setup.candidates.items():
            cand_vecs[protocol], start = vecs[start:start + len(cand)], start + len(cand)
        user_vecs = model.user_vectors(torch.as_tensor(trained, device=vecs.device)).detach()
        for n in tqdm(counts, desc=f"cold start · {name}", disable=not progress):
            episodes = setup.episodes(n, repetitions, seed)
            skipped[n] = episodes.n_skipped
            keys = [(p, s) for p in setup.candidates for s in STRATEGIES]
            per_rep: dict[tuple, list] = {k: [] for k in keys}
            per_user: dict[tuple, dict] = {k: {} for k in keys}   # (protocol, strategy) -> user -> AUCs
            digests = {p: CandidateDigest() for p in setup.candidates}
            for rep in range(repetitions):
                samples = [e for e in episodes.samples if e.repetition == rep]
                if not samples:
                    break
                interacted = torch.stack([pos_vecs[torch.as_tensor(e.interacted_ids)] for e in samples])
                mask = torch.ones(interacted.shape[:2], dtype=torch.bool, device=interacted.device)
                s = user_similarity_batched(user_vecs, interacted, mask)               # [C', U]
                profiles = {strategy: aggregate_user_vectors(aggregation_weights(s, strategy, delta, tau), user_vecs)
                            for strategy in STRATEGIES}
                for protocol, cand in setup.candidates.items():
                    rows_idx, owner_rows = held_out_rows(setup, samples, protocol)
                    digests[protocol].add(rows_idx)
                    for strategy in STRATEGIES:
                        profile = profiles[strategy]
                        scores = (profile[torch.as_tensor(owner_rows)]
                                  * cand_vecs[protocol][torch.as_tensor(rows_idx)]).sum(-1).cpu().numpy()
                        m = ranking_metrics_all(owner_rows, scores, cand.label[rows_idx])
                        per_rep[protocol, strategy].append(m)
                        for i, auc in zip(*per_user_auc(owner_rows, scores, cand.label[rows_idx])):
                            per_user[protocol, strategy].setdefault(int(samples[i].user), []).append(float(auc))
            for (protocol, strategy), reps in per_rep.items():
                if not reps:   # no cold user has n outfits to reveal (counted in skipped)
                    continue
                aucs = np.array([r["auc"] for r in reps])
                ndcgs = np.array([r["ndcg_lpae"] for r in reps])
                ndcgs_std = np.array([r["ndcg_standard"] for r in reps])
                rows.append({"model": name, "protocol": protocol, "strategy": strategy, "n_interactions": n,
                             "auc_mean": float(aucs.mean()), "auc_std": float(aucs.std()),
                             "ndcg_lpae_mean": float(ndcgs.mean()), "ndcg_lpae_std": float(ndcgs.std()),
                             "ndcg_standard_mean": float(ndcgs_std.mean()),
                             "repetitions": len(reps), "cold_users": len(cold_users) - skipped[n],
                             "candidate_digest": digests[protocol].hexdigest(),
                             "candidate_rows": digests[protocol].rows,
                             # each cold user's AUC averaged over repetitions (paired tests)
                             "per_user_auc": {u: float(np.mean(v)) for u, v in per_user[protocol, strategy].items()}})
    return {"rows": rows, "skipped": skipped, "delta": delta, "tau": tau, "repetitions": repetitions,
            "cold_users": int(len(cold_users)), "cold_outfits": int(cold_ids.size),
            "cold_split": setup.cold_split,
            "cold_split_description": describe_cold_split(setup.cold_split, ratio),
            "protocols": list(setup.candidates),
            "negative_ratios": {p: b - 1 for p, b in setup.blocks.items()},
            "revealable_outfits": int(len(setup.revealable)),
            "held_out_outfits": int(len(setup.candidates["random"]) // setup.blocks["random"])}


def supports_cold_start(kind: str) -> bool:
    """Whether a registered model recommends to a cold starter without training: user vectors
    (the neighbourhood of eqs. 20–24), its own ``cold_start_scores``, or no user at all."""
    cls = model_class(kind)
    return hasattr(cls, "user_vectors") or hasattr(cls, "cold_start_scores") or not cls.personalized


def check_cold_start_support(run: RunFolder, models) -> None:
    """Every model has a cold-start rule: the recommender's neighbourhood (eqs. 20–24), its own
    (``cold_start_scores``, e.g. LPAE's anchor search) or none needed (non-personalized). FHN and
    OutfitNet would need training for a new user, which Table 3 does not allow."""
    unsupported = []
    for name in models:
        kind = run.read_config(name).get("train", {}).get("model", "recommender")
        if kind in MODELS and not supports_cold_start(kind):
            unsupported.append(f"{name} ({kind})")
    if unsupported:
        raise StageError(f"models {unsupported} have no cold-start rule without training (paper §4.3 "
                         f"compares the recommender, LPAE's anchor search and the non-personalized "
                         f"models); leave them out of models")


def baseline_rows(name: str, model, cache, setup: ColdSetup, trained: np.ndarray, counts, repetitions: int,
                  seed: int, skipped: dict, progress: bool = True) -> list[dict]:
    """Table-3 rows of a baseline, apart from the recommender's neighbourhood path, on the same
    episodes and held-out candidates (:func:`held_out_rows`) as the recommender's rows.

    - A non-personalized model ranks every cold user's candidates by s(o) alone, whatever the
      user revealed (strategy ``non-personalized``): s(o) is computed once per candidate, and each
      repetition ranks the held-out blocks of that repetition's episodes — the rows the
      personalized models rank at that n (a user with too few outfits for n is skipped by every
      row alike).
    - A model with ``cold_start_scores`` (LPAE's anchor search) gets one row per rule in its
      ``cold_start_rules`` (strategy = the rule's name; a model without that table: its
      ``cold_start_strategy``): per repetition the n revealed outfits of each cold user, its
      held-out blocks ranked.
    """
    rows = []

    def row(protocol, strategy, n, reps, per_user, cold_users, digest):
        aucs = np.array([r["auc"] for r in reps])
        ndcgs = np.array([r["ndcg_lpae"] for r in reps])
        return {"model": name, "protocol": protocol, "strategy": strategy, "n_interactions": n,
                "auc_mean": float(aucs.mean()), "auc_std": float(aucs.std()),
                "ndcg_lpae_mean": float(ndcgs.mean()), "ndcg_lpae_std": float(ndcgs.std()),
                "ndcg_standard_mean": float(np.mean([r["ndcg_standard"] for r in reps])),
                "repetitions": len(reps), "cold_users": cold_users,
                "candidate_digest": digest.hexdigest(), "candidate_rows": digest.rows,
                "per_user_auc": {u: float(np.mean(v)) for u, v in per_user.items()}}

    if model.personalized:
        rules = dict(getattr(model, "cold_start_rules", None)
                     or {getattr(model, "cold_start_strategy", None) or "own": None})
        flat = None
    else:
        rules = {"non-personalized": None}
        flat = {p: model.score_cached(c.user, c.items, cache).cpu().numpy() for p, c in setup.candidates.items()}
    for n in tqdm(counts, desc=f"cold start · {name}", disable=not progress):
        episodes = setup.episodes(n, repetitions, seed)
        skipped[n] = episodes.n_skipped
        keys = [(p, r) for p in setup.candidates for r in rules]
        per_rep = {k: [] for k in keys}
        per_user = {k: {} for k in keys}
        digests = {p: CandidateDigest() for p in setup.candidates}
        for rep in range(repetitions):
            samples = [e for e in episodes.samples if e.repetition == rep]
            if not samples:
                break
            revealed = np.stack([setup.revealable[e.interacted_ids] for e in samples])     # [C, n, S]
            for protocol, cand in setup.candidates.items():
                rows_idx, owner_rows = held_out_rows(setup, samples, protocol)
                digests[protocol].add(rows_idx)
                for rule in rules:
                    if flat is not None:
                        scores = flat[protocol][rows_idx]
                    else:
                        extra = {} if rules[rule] is None else {"rule": rule}
                        scores = model.cold_start_scores(revealed, cand.items[rows_idx], owner_rows, cache,
                                                         trained, **extra).cpu().numpy()
                    per_rep[protocol, rule].append(ranking_metrics_all(owner_rows, scores, cand.label[rows_idx]))
                    for i, auc in zip(*per_user_auc(owner_rows, scores, cand.label[rows_idx])):
                        per_user[protocol, rule].setdefault(int(samples[i].user), []).append(float(auc))
        rows += [row(p, rule, n, reps, per_user[p, rule], len(setup.users) - skipped[n], digests[p])
                 for (p, rule), reps in per_rep.items() if reps]
    return rows


def table3(result: dict, n_interactions=(1, 5), protocol: str = "random"):
    """The paper's Table-3 layout: one row per model and strategy, AUC mean ± std per # outfits
    (``protocol``: the negatives, ``"random"`` as in Table 3 or ``"hard"`` where released)."""
    df = pd.DataFrame(result["rows"])
    if "protocol" in df:   # results written before the hard protocol existed are random-only
        df = df[df["protocol"] == protocol]
    df = df[df["n_interactions"].isin(list(n_interactions))]
    df["AUC"] = [f"{m * 100:.2f} ± {s * 100:.2f}" for m, s in zip(df["auc_mean"], df["auc_std"])]
    return df.pivot_table(index=["model", "strategy"], columns="n_interactions", values="AUC", aggfunc="first")


DEFAULT_MODELS = ["teacher", "student_npair", "student_fnd", "contrastive", "lpae-u", "lpae-g", "bi-lstm",
                  "type-aware", "sce-net"]


@dataclass(frozen=True)
class Params(StageParams):
    """notebooks/05_cold_start's parameters cell: the stages whose folders exist are used."""

    kind: ClassVar[str] = "cold_start"
    notebook: ClassVar[str] = "05_cold_start"

    run_dir: str = "outputs/demo"
    models: list = field(default_factory=lambda: list(DEFAULT_MODELS))
    n_interactions: list = field(default_factory=lambda: [1, 5])
    repetitions: int = 10
    delta: float = 0.0
    tau: float = 0.2
    curve_interactions: list = field(default_factory=lambda: [1, 2, 5, 10])
    cold_split: str = "auto"
    seed: int = 0
    device: str = "auto"


def present_models(run_folder: RunFolder, models) -> tuple[list[str], list[str]]:
    """``models`` split into those trained in ``run_folder`` and those missing (in that order)."""
    trained = set(run_folder.trained_models())
    present = [m for m in models if m in trained]
    return present, sorted(set(models) - set(present))


def execute(params: Params, progress: bool = True) -> dict:
    """05_cold_start for ``params``: the Table-3 experiment over the listed models present in the
    run folder (all of them when none is: :func:`run` then names what is missing); writes
    ``cold_start/metrics.json``. (:func:`run` seeds its own episodes from ``params.seed``.)"""
    folder = RunFolder(params.run_dir)
    present, missing = present_models(folder, params.models)
    if missing and progress:
        print(f"not trained in this run folder, skipped: {missing}")
    models = present or list(params.models)
    # what the result is: the parameters (not where or on which device) and the models it scored
    config = jsonable({**{k: v for k, v in params.to_dict().items() if k not in ("run_dir", "device")},
                       "models": models, "inputs": folder.inputs_of(models)})
    with folder.claimed(COLD_START):  # one writer; config.json and metrics.json written together
        if folder.metrics_path(COLD_START).exists() and folder.read_config(COLD_START) == config:
            print(f"{folder.stage_dir(COLD_START)} already holds this cold-start result; reusing it")
            return folder.read_metrics(COLD_START)
        result = run(folder, models, n_interactions=params.n_interactions,
                     repetitions=params.repetitions, delta=params.delta, tau=params.tau, seed=params.seed,
                     curve_interactions=params.curve_interactions, device=params.device,
                     cold_split=params.cold_split, progress=progress)
        write_json(folder.path(COLD_START, "config.json"), config)
        folder.write_metrics(COLD_START, result)
    return result
