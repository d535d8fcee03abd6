"""00_data: generate or read the dataset, attach fixed evaluation candidates, summarise it."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from ..artifacts import jsonable
from ..config import DataConfig
from ..data.folder import ITEMS_FILE, OUTFITS_FILE, is_outfit_folder, read_outfit_folder
from ..data.polyvore import read_polyvore_u
from ..data.sampling import attach_candidates, check_split_invariants
from ..data.schema import DatasetError, OutfitDataset
from ..data.synthetic import false_negative_fraction, make_dataset
from ..metrics import ranking_metrics_all, ranking_metrics_clean
from ..rundir import RunFolder, StageError, check_overwrite, resolve_path


_FORMATS_HINT = (f"point it at a Polyvore-U root (holding images/ and tuples_630/ …; format "
                 f"'polyvore') or at an outfit folder (holding {ITEMS_FILE} and {OUTFITS_FILE}; "
                 f"format 'folder', see fndkit/data/folder.py)")


def source_format(cfg: DataConfig) -> str:
    """What ``cfg.source`` is: ``"synthetic"``, ``"polyvore"`` or ``"folder"`` (``format="auto"``
    tells an outfit folder by its ``items.csv`` + ``outfits.csv``, a Polyvore-U root by its
    ``tuples_<U>/`` folders)."""
    if cfg.source == "synthetic":
        return "synthetic"
    root = resolve_path(cfg.source)
    if not root.is_dir():
        raise DatasetError(f"source={cfg.source!r} is neither 'synthetic' nor an existing folder "
                           f"(looked at {root}); {_FORMATS_HINT}")
    if cfg.format != "auto":
        return cfg.format
    if is_outfit_folder(root):
        return "folder"
    if any(p.is_dir() for p in root.glob("tuples_*")):
        return "polyvore"
    raise DatasetError(f"source={cfg.source!r} ({root}) is neither a Polyvore-U root nor an outfit "
                       f"folder: it holds no tuples_<U>/ folder and no {ITEMS_FILE} + "
                       f"{OUTFITS_FILE}; {_FORMATS_HINT}, or pass -p format polyvore / folder to "
                       f"see what the reader misses")


def build_dataset(cfg: DataConfig) -> OutfitDataset:
    """Generate (synthetic) or read (a Polyvore-U release or an outfit folder) the dataset and
    attach fixed evaluation candidates."""
    kind = source_format(cfg)
    if kind == "synthetic":
        ds = make_dataset(scale=cfg.scale, seed=cfg.seed, variable_size=cfg.variable_size,
                          image_size=cfg.image_size, taste_breadth=cfg.taste_breadth,
                          appearance=cfg.appearance)
    elif kind == "folder":
        ds = read_outfit_folder(resolve_path(cfg.source), image_size=cfg.image_size)
    else:
        root = resolve_path(cfg.source)
        cold = cfg.cold_subset
        if cold is None:
            guess = {"630": "53", "519": "32"}.get(str(cfg.subset))
            cold = guess if guess and (root / f"tuples_{guess}").is_dir() else None
        ds = read_polyvore_u(root, subset=str(cfg.subset), image_size=cfg.image_size, cold_subset=cold,
                             check_images=True)  # a corrupt image fails here, not mid-training
    attach_candidates(ds, seed=cfg.seed, ratio=cfg.candidate_ratio)
    ds.meta = {**ds.meta, "data_config": cfg.to_dict()}
    ds.validate()
    try:
        check_split_invariants(ds)
    except DatasetError as exc:
        if kind == "synthetic":  # the generator guarantees it: a break here is a bug
            raise
        # real data is kept as distributed; say so loudly rather than refuse the data
        origin = "the released split" if kind == "polyvore" else f"the split written in {OUTFITS_FILE}"
        warnings.warn(f"{origin} breaks an invariant of paper §4.1.1: {exc}", stacklevel=2)
    return ds


def run(run_dir: str | os.PathLike, cfg: DataConfig, overwrite: bool = False) -> OutfitDataset:
    """Write the canonical dataset into ``run_dir/data`` (atomically) and return it.

    An existing dataset built from the same config is reused; a different one stops with a clear
    message unless ``overwrite``.
    """
    check_overwrite(overwrite)
    run = RunFolder(run_dir)
    if run.has_data():
        old = run.data_description()
        built_with = old.get("meta", {}).get("data_config")
        same = (isinstance(built_with, dict)
                and DataConfig.with_defaults(built_with) == jsonable(cfg.to_dict()))
        if same and not overwrite:
            return run.dataset()
        if not overwrite:
            raise StageError(
                f"{run.data_dir} already holds dataset {old.get('name')!r} built with "
                f"{old.get('meta', {}).get('data_config')}; use another run_dir, or pass "
                f"overwrite=True to replace it (and retrain everything after it)")
    build_dataset(cfg).save(run.data_dir)
    return OutfitDataset.load(run.data_dir)


def summary(ds: OutfitDataset, seed: int = 0) -> dict:
    """Statistics (Table 1 layout) and, for synthetic data, the measured false-negative fraction."""
    out = {"stats": ds.stats(), "fingerprint": ds.fingerprint(),
           "candidates": {k: {"rows": len(c), "positives": int(c.label.sum())} for k, c in ds.candidates.items()}}
    if ds.truth is not None:
        cand = ds.candidates.get("test/random")
        if cand is not None:
            neg = cand.label == 0
            fn = ds.truth.is_false_negative(cand.user[neg], cand.items[neg])
            out["false_negative_fraction_test_candidates"] = float(fn.mean())
        out["false_negative_threshold"] = float(ds.truth.false_negative_threshold)
        out["false_negative_fraction_random_mixtures"] = float(false_negative_fraction(ds, seed=seed))
        out["taste_breadth"] = float(ds.meta.get("generator", {}).get("taste_breadth", 1.0))
        out["appearance"] = str(ds.meta.get("generator", {}).get("appearance", "simple"))
        # the ceiling: test AUC of ranking every candidate by its true affinity
        out["true_affinity_auc"] = {
            key.split("/")[1]: float(ranking_metrics_all(c.user, ds.truth.true_affinity(c.user, c.items), c.label)["auc"])
            for key, c in ds.candidates.items() if key.startswith("test/")}
        # ... and on the clean lists (true false negatives removed), the ceiling of test_clean
        out["true_affinity_auc_clean"] = {
            key.split("/")[1]: float(ranking_metrics_clean(
                c.user, ds.truth.true_affinity(c.user, c.items), c.label,
                ds.truth.is_false_negative(c.user, c.items))["auc"])
            for key, c in ds.candidates.items() if key.startswith("test/")}
    return out


def affinity_table(ds: OutfitDataset, split: str = "test", protocol: str = "random"):
    """True affinity of each candidate for its user (synthetic only) as a DataFrame."""
    cand = ds.candidate_set(split, protocol)
    aff = ds.truth.true_affinity(cand.user, cand.items)
    kind = np.where(cand.label == 1, "positive", "random-mixture negative")
    return pd.DataFrame({"user": cand.user, "true_affinity": aff, "kind": kind})
