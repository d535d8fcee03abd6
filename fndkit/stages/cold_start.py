"""05_cold_start: the Table-3 experiment — recommend to the cold-start pool with each trained
model and no training (paper §3.5, §4.3), using the neighbourhood maths of :mod:`fndkit.coldstart`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..coldstart import (STRATEGIES, aggregate_user_vectors, aggregation_weights, check_params,
                         cold_start_protocol, user_similarity_batched)
from ..data.sampling import build_candidates
from ..evaluate import item_cache
from ..metrics import ranking_metrics_all
from ..models.recommender import outfit_vectors_cached
from ..repro import resolve_device
from ..rundir import RunFolder, StageError


def run(run_dir, models=("teacher", "student_npair", "student_fnd", "contrastive"),
                   n_interactions=(1, 5), repetitions: int = 10, delta: float = 0.0, tau: float = 0.2,
                   seed: int = 0, curve_interactions=(1, 2, 5, 10), device: str = "auto",
                   ratio: int = 10, progress: bool = True) -> dict:
    """Recommend to the cold-start pool with each trained model and no training (paper §4.3).

    For every repetition and cold user, ``n`` of the user's outfits are revealed (J_c^+); each of
    the others is ranked against ``ratio`` random-mixture negatives (fixed per seed, the main
    protocol's sampler over the cold split). Scores come from eqs. 20–24 by strategy; the
    reference rows cost nothing: ``population`` (every trained user, equal weights) and
    ``nearest`` (the single most similar user). Models missing from the run folder raise; pass
    only the ones you trained. Returns ``{"rows": [...], "skipped": {n: count}}`` where each row
    holds model, strategy, n_interactions and the mean and std over repetitions of AUC and NDCG.
    """
    check_params("w-avg", delta, tau)
    run = RunFolder(run_dir)
    ds = run.dataset()
    cold_ids = ds.outfits_of("cold")
    if cold_ids.size == 0:
        raise StageError(f"the dataset in {run.root} has no cold-start pool; regenerate it (synthetic "
                         f"data always has one) or read Polyvore-U with cold_subset='53' / '32'")
    models = [models] if isinstance(models, str) else list(models)
    available = run.trained_models()
    unknown = [m for m in models if m not in available]
    if unknown:
        raise StageError(f"models {unknown} are not trained in {run.root}; available: {available}")
    counts = sorted(set(int(n) for n in (*n_interactions, *curve_interactions)))
    device = resolve_device(device)
    cand = build_candidates(ds, seed=seed, ratio=ratio, splits=("cold",), protocols=("random",))["cold/random"]
    block = ratio + 1
    if not np.array_equal(cand.items[::block], ds.outfit_items[cold_ids]):
        raise RuntimeError("cold candidates are not laid out one block per cold outfit")
    cold_users = np.unique(ds.outfit_user[cold_ids])
    by_user = {int(u): np.flatnonzero(ds.outfit_user[cold_ids] == u) for u in cold_users}  # block ids
    trained = ds.trained_users
    rows, skipped = [], {}
    for name in models:
        model, _ = run.load_model(name, device=device)
        cache = item_cache(model, ds, cand.items, device)
        cand_vecs = torch.nn.functional.normalize(outfit_vectors_cached(model, cand.items, cache), dim=-1)
        pos_vecs = cand_vecs[::block]
        user_vecs = model.user_vectors(torch.as_tensor(trained, device=cand_vecs.device)).detach()
        for n in tqdm(counts, desc=f"cold start · {name}", disable=not progress):
            episodes = cold_start_protocol(cold_users.tolist(), by_user, n, repetitions, seed)
            skipped[n] = episodes.n_skipped
            per_rep: dict[str, list] = {s: [] for s in STRATEGIES}
            for rep in range(repetitions):
                samples = [e for e in episodes.samples if e.repetition == rep]
                if not samples:
                    break
                interacted = torch.stack([pos_vecs[torch.as_tensor(e.interacted_ids)] for e in samples])
                mask = torch.ones(interacted.shape[:2], dtype=torch.bool, device=interacted.device)
                s = user_similarity_batched(user_vecs, interacted, mask)               # [C', U]
                test_blocks = np.concatenate([e.held_out_ids for e in samples])
                owner = np.concatenate([np.full(len(e.held_out_ids), i) for i, e in enumerate(samples)])
                rows_idx = (test_blocks[:, None] * block + np.arange(block)).ravel()
                owner_rows = np.repeat(owner, block)
                for strategy in STRATEGIES:
                    profile = aggregate_user_vectors(aggregation_weights(s, strategy, delta, tau), user_vecs)
                    scores = (profile[torch.as_tensor(owner_rows)] * cand_vecs[torch.as_tensor(rows_idx)]).sum(-1)
                    m = ranking_metrics_all(owner_rows, scores.cpu().numpy(), cand.label[rows_idx])
                    per_rep[strategy].append(m)
            for strategy, reps in per_rep.items():
                aucs = np.array([r["auc"] for r in reps])
                ndcgs = np.array([r["ndcg_lpae"] for r in reps])
                ndcgs_std = np.array([r["ndcg_standard"] for r in reps])
                rows.append({"model": name, "strategy": strategy, "n_interactions": n,
                             "auc_mean": float(aucs.mean()), "auc_std": float(aucs.std()),
                             "ndcg_lpae_mean": float(ndcgs.mean()), "ndcg_lpae_std": float(ndcgs.std()),
                             "ndcg_standard_mean": float(ndcgs_std.mean()),
                             "repetitions": len(reps), "cold_users": len(cold_users) - skipped[n]})
    return {"rows": rows, "skipped": skipped, "delta": delta, "tau": tau, "repetitions": repetitions,
            "cold_users": int(len(cold_users)), "cold_outfits": int(cold_ids.size)}


def table3(result: dict, n_interactions=(1, 5)):
    """The paper's Table-3 layout: one row per model and strategy, AUC mean ± std per # outfits."""
    df = pd.DataFrame(result["rows"])
    df = df[df["n_interactions"].isin(list(n_interactions))]
    df["AUC"] = [f"{m * 100:.2f} ± {s * 100:.2f}" for m, s in zip(df["auc_mean"], df["auc_std"])]
    return df.pivot_table(index=["model", "strategy"], columns="n_interactions", values="AUC", aggfunc="first")
