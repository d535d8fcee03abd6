"""00_data: generate or read the dataset, attach fixed evaluation candidates, summarise it."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ..artifacts import jsonable, read_json
from ..config import DataConfig
from ..data.decode import decode_store
from ..data.folder import ITEMS_FILE, OUTFITS_FILE, is_outfit_folder, read_outfit_folder
from ..data.images import FileImages
from ..data.polyvore import read_polyvore_u
from ..data.sampling import attach_candidates, check_split_invariants
from ..data.schema import CATEGORIES, ArrayImages, DatasetError, OutfitDataset
from ..data.synthetic import false_negative_fraction, make_dataset
from ..metrics import ranking_metrics_all, ranking_metrics_clean
from ..repro import seed_everything
from ..rundir import CLAIM_FILE, DATA, DECODED_IMAGES, RunFolder, StageError, check_overwrite, resolve_path
from .params import StageParams


IMAGE_STORE_DIR = DECODED_IMAGES
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


def build_dataset(cfg: DataConfig, image_store: str | os.PathLike | None = None,
                  progress: bool = True) -> OutfitDataset:
    """Generate (synthetic) or read (a Polyvore-U release or an outfit folder) the dataset and
    attach fixed evaluation candidates.

    image_store: with ``cfg.decode == "once"``, the folder where images read from files are
    decoded once (:func:`fndkit.data.decode.decode_store`; resumed if a killed run left it);
    None keeps them decoded on demand, as ``decode="on_the_fly"`` does.
    """
    kind = source_format(cfg)
    decode_once = cfg.decode == "once" and image_store is not None
    if kind == "synthetic":
        ds = make_dataset(scale=cfg.scale, seed=cfg.seed, variable_size=cfg.variable_size,
                          image_size=cfg.image_size, taste_breadth=cfg.taste_breadth,
                          appearance=cfg.appearance)
    elif kind == "folder":
        # decoding once checks every image anyway: no separate check pass
        ds = read_outfit_folder(resolve_path(cfg.source), image_size=cfg.image_size,
                                check_images=not decode_once)
    else:
        root = resolve_path(cfg.source)
        cold = cfg.cold_subset
        if cold is None:
            guess = {"630": "53", "519": "32"}.get(str(cfg.subset))
            cold = guess if guess and (root / f"tuples_{guess}").is_dir() else None
        # a corrupt image fails here (or in the decode below), not mid-training
        ds = read_polyvore_u(root, subset=str(cfg.subset), image_size=cfg.image_size, cold_subset=cold,
                             check_images=not decode_once)
    if decode_once and isinstance(ds.images, FileImages):
        ds.images = decoded_images(ds, image_store, progress=progress)
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


def decoded_images(ds: OutfitDataset, folder: str | os.PathLike, progress: bool = True) -> ArrayImages:
    """``ds``'s file images decoded once into the store at ``folder`` (every core, a progress bar,
    resumable), memory-mapped; a bad image is named with its image-list line."""
    files = ds.images
    stats: dict = {}
    pixels = decode_store(files, folder, progress=progress, origin=_origin_of(ds), stats=stats)
    release = read_json(Path(folder) / "store.json", fix=f"delete {folder} and rerun 00_data (it decodes again)")["release"]
    ds.meta = {**ds.meta, "decoded_store": {"folder": str(folder), "release": release,
                                          "decoded_from": str(files.root), "kind": files.kind}}
    if stats.get("decoded"):
        print(f"decoded {stats['decoded']:,} images in {stats['seconds']:.0f} s "
              f"({stats['decoded'] / max(stats['seconds'], 1e-9):.0f} images/s, {stats['workers']} processes)")
    return ArrayImages(pixels)


def _origin_of(ds: OutfitDataset):
    """item -> where it was listed (a Polyvore-U image-list line, an items.csv row), for errors."""
    if ds.meta.get("source") == "polyvore-u":
        root, subsets = Path(ds.meta["root"]), [ds.meta["subset"], ds.meta.get("cold_subset")]
        lists = [(root / f"tuples_{s}", cat) for s in subsets if s for cat in CATEGORIES]

        def origin(item: int) -> str:
            start = 0
            for folder, cat in lists:
                path = next((p for p in (folder / f"image_list_{cat}", folder / f"image_list_{cat}.txt")
                             if p.is_file()), folder / f"image_list_{cat}")
                count = len(path.read_text(encoding="utf-8-sig").splitlines())
                if item < start + count:
                    return f"line {item - start + 1} of {path}"
                start += count
            return "no image list"

        return origin
    if ds.meta.get("item_ids"):
        return lambda item: f"item id {ds.meta['item_ids'][item]!r} of {Path(ds.meta['root']) / ITEMS_FILE}"
    return None


def image_store_dir(run_dir: str | os.PathLike) -> Path:
    """Where 00_data decodes a run's images once (beside ``data/``, which links to its file)."""
    return RunFolder(run_dir).root / IMAGE_STORE_DIR


def run(run_dir: str | os.PathLike, cfg: DataConfig, overwrite: bool = False,
        claim_timeout: float | None = None) -> OutfitDataset:
    """Write the canonical dataset into ``run_dir/data`` (atomically) and return it.

    An existing dataset built from the same config is reused; a different one stops with a clear
    message unless ``overwrite``. One writer: the data folder is claimed while it is decided and
    written (:meth:`RunFolder.claimed`), so two 00_data runs on one folder never both write it —
    the second waits, then reuses (same config) or is refused by name (another one).
    """
    check_overwrite(overwrite)
    run = RunFolder(run_dir)
    with run.claimed(DATA, claim_timeout):
        return _build_or_reuse(run, cfg, overwrite)


def _build_or_reuse(run: RunFolder, cfg: DataConfig, overwrite: bool) -> OutfitDataset:
    """:func:`run` once the data folder is claimed."""
    if run.has_data() and not overwrite:
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
    store = image_store_dir(run.root)
    if overwrite and store.exists() and not _store_fits(store, cfg):
        shutil.rmtree(store)   # another size or release: overwrite means decode again
    build_dataset(cfg, image_store=store).save(run.data_dir, keep=(CLAIM_FILE,))
    return OutfitDataset.load(run.data_dir)


def _store_fits(store: Path, cfg: DataConfig) -> bool:
    """Whether the store a previous run left may be resumed or reused under ``cfg`` (the release's
    fingerprint is checked again when it is opened)."""
    try:
        info = json.loads((store / "store.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("image_size") == cfg.image_size


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


@dataclass(frozen=True)
class Params(StageParams):
    """notebooks/00_data's parameters cell (see :class:`~fndkit.config.DataConfig` for each)."""

    kind: ClassVar[str] = "data"
    notebook: ClassVar[str] = "00_data"

    run_dir: str = "outputs/demo"
    source: str = "synthetic"
    format: str = "auto"
    subset: str = "630"
    scale: str = "demo"
    variable_size: bool = False
    taste_breadth: float = 1.0
    appearance: str = "simple"
    image_size: int = 32
    decode: str = "once"
    cold_subset: str = ""
    seed: int = 0
    overwrite: bool = False

    def data_config(self) -> DataConfig:
        return DataConfig(source=self.source, subset=str(self.subset), scale=self.scale,
                          variable_size=self.variable_size, image_size=self.image_size, seed=self.seed,
                          cold_subset=str(self.cold_subset) if self.cold_subset else None,
                          format=self.format, taste_breadth=self.taste_breadth, decode=self.decode,
                          appearance=self.appearance)


def execute(params: Params, progress: bool = True) -> dict:
    """00_data for ``params``: build (or reuse) the dataset, write ``data/metrics.json`` (the
    :func:`summary`) and return it."""
    seed_everything(params.seed)
    cfg = params.data_config()
    run_folder = RunFolder(params.run_dir)
    with run_folder.claimed(DATA):  # the dataset and its summary by one writer (run claims again: re-entrant)
        ds = run(run_folder, cfg, overwrite=params.overwrite)
        result = summary(ds, seed=params.seed)
        run_folder.write_metrics(DATA, result)
    return result
