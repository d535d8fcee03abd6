"""The canonical dataset every source is converted to once (in 00_data), and its validation.

Layout (all ids are 0-based row indices):

* items: ``item_category[i]`` in ``CATEGORIES`` order (0 top, 1 bottom, 2 shoe); the image of item
  ``i`` is row ``i`` of the image store.
* outfits: ``outfit_items[o]`` is a row of ``n_slots`` item ids with ``-1`` for an absent slot;
  ``slot_categories[s]`` is the category every item in slot ``s`` has (fixed-size: top, bottom,
  shoe; variable-size: top, top, bottom, shoe like Polyvore-519); ``outfit_user[o]`` the user who
  posted it; ``outfit_split[o]`` an index into ``SPLITS``.
* users: ``user_pool[u]`` is 0 for a trained user, 1 for a cold-start user (a separate pool, like
  Polyvore-53/-32: never trained on; their outfits have split ``cold``).
* candidates: fixed evaluation lists, keyed ``"<split>/<protocol>"`` (protocol ``random`` or
  ``hard``), each 1 positive : ``ratio`` negatives per positive.
* truth (built-in benchmark only): the generator's ground truth, so false negatives are known.

On disk (``run_dir/data/``): ``dataset.json`` (metadata + fingerprint), ``tables.npz``,
``candidates.npz``, ``images.npy`` (memory-mapped on load) or ``images.json`` (lazily decoded
files), and ``truth.npz`` for synthetic data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..artifacts import atomic_path, read_json, to_json
from .errors import DatasetError
from .images import FileImages
from .truth import SyntheticTruth

CATEGORIES = ("top", "bottom", "shoe")
SPLITS = ("train", "val_teacher", "val_student", "test", "cold")
PROTOCOLS = ("random", "hard")
FIXED_LAYOUT = (0, 1, 2)
VARIABLE_LAYOUT = (0, 0, 1, 2)
FORMAT_VERSION = 1


def split_index(name: str) -> int:
    if name not in SPLITS:
        raise DatasetError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)}")
    return SPLITS.index(name)


# --------------------------------------------------------------------------------------------
# Images


class ImageStore(Protocol):
    """Anything that returns item images as uint8 ``[k, H, W, 3]`` for an array of item ids."""

    image_size: int

    def __len__(self) -> int: ...

    def get(self, item_ids: np.ndarray) -> np.ndarray: ...


class ArrayImages:
    """Images held in a uint8 array ``[n_items, H, W, 3]`` (in memory or memory-mapped)."""

    def __init__(self, array: np.ndarray):
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise DatasetError(
                f"images must be uint8 [n_items, H, W, 3], got {array.dtype} {array.shape}")
        if array.shape[1] != array.shape[2]:
            raise DatasetError(f"images must be square, got {array.shape[1]}x{array.shape[2]}")
        self.array = array
        self.image_size = int(array.shape[1])

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def get(self, item_ids: np.ndarray) -> np.ndarray:
        item_ids = np.asarray(item_ids, dtype=np.int64)
        return np.asarray(self.array[item_ids])


@dataclass
class CandidateSet:
    """A fixed evaluation list: row ``m`` asks how user ``user[m]`` scores outfit ``items[m]``."""

    user: np.ndarray   # int64 [M]
    items: np.ndarray  # int64 [M, n_slots], -1 = absent slot
    label: np.ndarray  # int8 [M], 1 = positive

    def __len__(self) -> int:
        return int(self.user.shape[0])


@dataclass
class OutfitDataset:
    """The canonical dataset (see the module docstring for the layout)."""

    name: str
    item_category: np.ndarray          # int8 [I]
    outfit_items: np.ndarray           # int64 [O, S]
    outfit_user: np.ndarray            # int64 [O]
    outfit_split: np.ndarray           # int8 [O]
    slot_categories: np.ndarray        # int8 [S]
    user_pool: np.ndarray              # int8 [U]: 0 trained, 1 cold
    images: Any                        # ImageStore
    candidates: dict[str, CandidateSet] = field(default_factory=dict)
    item_attributes: dict[str, np.ndarray] = field(default_factory=dict)
    truth: Any = None                  # fndkit.data.synthetic.SyntheticTruth or None
    meta: dict = field(default_factory=dict)

    # ---- shape facts -----------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return int(self.item_category.shape[0])

    @property
    def n_outfits(self) -> int:
        return int(self.outfit_items.shape[0])

    @property
    def n_slots(self) -> int:
        return int(self.outfit_items.shape[1])

    @property
    def n_users(self) -> int:
        """All users, trained and cold (the size of the id space)."""
        return int(self.user_pool.shape[0])

    @property
    def trained_users(self) -> np.ndarray:
        return np.flatnonzero(self.user_pool == 0)

    @property
    def cold_users(self) -> np.ndarray:
        return np.flatnonzero(self.user_pool == 1)

    @property
    def variable_size(self) -> bool:
        return bool((self.outfit_items < 0).any())

    @property
    def image_size(self) -> int:
        return int(self.images.image_size)

    def split_mask(self, split: str) -> np.ndarray:
        return self.outfit_split == split_index(split)

    def outfits_of(self, split: str) -> np.ndarray:
        """Ids of the positive outfits in ``split``."""
        return np.flatnonzero(self.split_mask(split))

    def candidate_set(self, split: str, protocol: str = "random") -> CandidateSet:
        key = f"{split}/{protocol}"
        if key not in self.candidates:
            have = ", ".join(sorted(self.candidates)) or "none"
            raise DatasetError(f"no evaluation candidates {key!r} in dataset {self.name!r}; "
                               f"available: {have}")
        return self.candidates[key]

    # ---- validation ------------------------------------------------------------------------
    def validate(self) -> "OutfitDataset":
        """Check every schema invariant; raise :class:`DatasetError` naming the first broken one."""
        I, (O, S), U = self.n_items, self.outfit_items.shape, self.n_users
        if len(self.images) != I:
            raise DatasetError(f"{self.name}: {len(self.images)} images for {I} items")
        if self.item_category.min(initial=0) < 0 or self.item_category.max(initial=0) >= len(CATEGORIES):
            raise DatasetError(f"{self.name}: item categories must lie in 0..{len(CATEGORIES) - 1}")
        if self.slot_categories.shape != (S,):
            raise DatasetError(f"{self.name}: slot_categories has shape {self.slot_categories.shape}, "
                               f"expected ({S},)")
        for arr, name in ((self.outfit_user, "outfit_user"), (self.outfit_split, "outfit_split")):
            if arr.shape != (O,):
                raise DatasetError(f"{self.name}: {name} has shape {arr.shape}, expected ({O},)")
        items = self.outfit_items
        if items.min(initial=0) < -1 or items.max(initial=0) >= I:
            bad = int(np.flatnonzero(((items < -1) | (items >= I)).any(1))[0])
            raise DatasetError(f"{self.name}: outfit {bad} has item ids {items[bad].tolist()} "
                               f"outside 0..{I - 1} (or -1 for an absent slot)")
        present = items >= 0
        if (present.sum(1) == 0).any():
            bad = int(np.flatnonzero(present.sum(1) == 0)[0])
            raise DatasetError(f"{self.name}: outfit {bad} has no items")
        slot_cat = np.broadcast_to(self.slot_categories, items.shape)
        cats = self.item_category[np.where(present, items, 0)]
        wrong = present & (cats != slot_cat)
        if wrong.any():
            o, s = map(int, np.argwhere(wrong)[0])
            raise DatasetError(
                f"{self.name}: outfit {o} slot {s} holds item {int(items[o, s])} of category "
                f"{CATEGORIES[int(cats[o, s])]}, but that slot is for {CATEGORIES[int(slot_cat[o, s])]}")
        if self.outfit_user.min(initial=0) < 0 or self.outfit_user.max(initial=0) >= U:
            raise DatasetError(f"{self.name}: outfit users must lie in 0..{U - 1}")
        if self.outfit_split.min(initial=0) < 0 or self.outfit_split.max(initial=0) >= len(SPLITS):
            raise DatasetError(f"{self.name}: outfit_split values must index {SPLITS}")
        cold_outfit = self.user_pool[self.outfit_user] == 1
        if (cold_outfit != (self.outfit_split == split_index("cold"))).any():
            raise DatasetError(f"{self.name}: exactly the cold-start users' outfits must have split 'cold'")
        for key, cand in self.candidates.items():
            split, _, protocol = key.partition("/")
            split_index(split)
            if protocol not in PROTOCOLS:
                raise DatasetError(f"{self.name}: candidate key {key!r} has unknown protocol")
            M = len(cand)
            if cand.items.shape != (M, S) or cand.label.shape != (M,):
                raise DatasetError(f"{self.name}: candidates {key!r} have inconsistent shapes")
            if cand.items.max(initial=0) >= I or cand.items.min(initial=0) < -1:
                raise DatasetError(f"{self.name}: candidates {key!r} hold item ids outside 0..{I - 1}")
            if cand.user.min(initial=0) < 0 or cand.user.max(initial=0) >= U:
                raise DatasetError(f"{self.name}: candidates {key!r} hold user ids outside 0..{U - 1}")
        return self

    # ---- identity --------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A short hash of the tables and candidates (not the pixels): equal data, equal hash."""
        h = hashlib.sha256()
        for arr in (self.item_category, self.outfit_items, self.outfit_user, self.outfit_split,
                    self.slot_categories, self.user_pool):
            h.update(np.ascontiguousarray(arr).astype(np.int64).tobytes())
        for key in sorted(self.candidates):
            c = self.candidates[key]
            h.update(key.encode())
            for arr in (c.user, c.items, c.label):
                h.update(np.ascontiguousarray(arr).astype(np.int64).tobytes())
        h.update(str(self.image_size).encode())
        return h.hexdigest()[:16]

    def stats(self) -> dict:
        """Counts in the layout of the paper's Table 1, plus the split sizes."""
        out = {
            "dataset": self.name,
            "users": int((self.user_pool == 0).sum()),
            "cold_users": int((self.user_pool == 1).sum()),
            "outfits": int((~self.split_mask("cold")).sum()),
            "items": int(np.unique(self.outfit_items[~self.split_mask("cold")]
                                   [self.outfit_items[~self.split_mask("cold")] >= 0]).size),
            "cold_outfits": int(self.split_mask("cold").sum()),
            "items_total": self.n_items,
            "slots": self.n_slots,
            "variable_size": self.variable_size,
            "image_size": self.image_size,
        }
        for split in SPLITS:
            out[f"outfits_{split}"] = int(self.split_mask(split).sum())
        return out

    # ---- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, keep: tuple[str, ...] = ()) -> Path:
        """Write the dataset folder atomically (a temporary folder renamed into place); ``keep``:
        files of the folder it replaces that stay (its claim, see :func:`atomic_path`)."""
        path = Path(path)
        self.validate()
        with atomic_path(path, keep=keep) as tmp:
            tmp.mkdir(parents=True)
            np.savez(tmp / "tables.npz", item_category=self.item_category,
                     outfit_items=self.outfit_items, outfit_user=self.outfit_user,
                     outfit_split=self.outfit_split, slot_categories=self.slot_categories,
                     user_pool=self.user_pool,
                     **{f"attr__{k}": v for k, v in self.item_attributes.items()})
            cand = {}
            for key, c in self.candidates.items():
                safe = key.replace("/", "__")
                cand[f"{safe}__user"], cand[f"{safe}__items"], cand[f"{safe}__label"] = (
                    c.user, c.items, c.label)
            np.savez(tmp / "candidates.npz", **cand)
            images_desc = _save_images(self.images, tmp)
            if self.truth is not None:
                self.truth.save(tmp / "truth.npz")
            (tmp / "dataset.json").write_text(to_json({
                "format_version": FORMAT_VERSION,
                "name": self.name,
                "fingerprint": self.fingerprint(),
                "candidate_keys": sorted(self.candidates),
                "images": images_desc,
                "has_truth": self.truth is not None,
                "meta": self.meta,
                "stats": self.stats(),
            }) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "OutfitDataset":
        """Load a folder written by :meth:`save`; images are memory-mapped by default."""
        path = Path(path)
        desc_path = path / "dataset.json"
        if not desc_path.exists():
            raise FileNotFoundError(
                f"no dataset at {path} (missing dataset.json); run notebooks/00_data.ipynb "
                f"with run_dir={path.parent} first")
        desc = read_json(desc_path, fix=f"delete the data folder {path}, or rerun notebooks/00_data.ipynb "
                                        f"with overwrite=True")
        if desc.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{desc_path}: format_version {desc.get('format_version')} is not "
                               f"{FORMAT_VERSION}; regenerate it with notebooks/00_data.ipynb")
        with np.load(path / "tables.npz") as t:
            tables = {k: t[k] for k in t.files}
        candidates = {}
        with np.load(path / "candidates.npz") as c:
            for key in desc["candidate_keys"]:
                safe = key.replace("/", "__")
                candidates[key] = CandidateSet(c[f"{safe}__user"], c[f"{safe}__items"],
                                               c[f"{safe}__label"])
        truth = None
        if desc.get("has_truth"):
            truth = SyntheticTruth.load(path / "truth.npz")
        images = _load_images(desc["images"], path, mmap=mmap)
        n_items, size = len(tables["item_category"]), desc["images"].get("image_size")
        if len(images) != n_items or (size is not None and images.image_size != size):
            raise DatasetError(
                f"{path / desc['images']['file']} holds {len(images)} images of {images.image_size}x"
                f"{images.image_size} px, but {desc_path} describes {n_items} items at {size}x{size} px "
                f"(the file was replaced after 00_data wrote it?); rerun notebooks/00_data.ipynb with "
                f"overwrite=True to rebuild the dataset")
        ds = cls(
            name=desc["name"],
            item_category=tables.pop("item_category"),
            outfit_items=tables.pop("outfit_items"),
            outfit_user=tables.pop("outfit_user"),
            outfit_split=tables.pop("outfit_split"),
            slot_categories=tables.pop("slot_categories"),
            user_pool=tables.pop("user_pool"),
            images=images,
            candidates=candidates,
            item_attributes={k[len("attr__"):]: v for k, v in tables.items() if k.startswith("attr__")},
            truth=truth,
            meta=desc.get("meta", {}),
        )
        if ds.fingerprint() != desc["fingerprint"]:
            raise DatasetError(f"{path}: tables do not match the fingerprint in dataset.json "
                               f"(files changed after writing?); regenerate with 00_data")
        return ds


def _whole_npy_file(array: np.ndarray) -> Path | None:
    """The ``.npy`` file ``array`` maps as a whole (``np.load(path, mmap_mode="r")``), else None."""
    filename = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or not filename or not array.flags.c_contiguous:
        return None
    with open(filename, "rb") as f:
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        reader = readers.get(np.lib.format.read_magic(f))
        if reader is None:
            return None
        shape, fortran, dtype = reader(f)
        offset = f.tell()
    whole = (shape, fortran, dtype, offset) == (array.shape, False, array.dtype, array.offset)
    return Path(filename) if whole else None


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link to a complete decoded image store (:mod:`fndkit.data.decode`: tens of GB are
    not copied, the dataset folder and the store share the file, which the store never writes
    again), else (or on another file system) a copy."""
    from .decode import is_complete_store

    if is_complete_store(source.parent) and source.name == "images.npy":
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def _save_images(images: Any, folder: Path) -> dict:
    if isinstance(images, ArrayImages):
        source = _whole_npy_file(images.array)
        if source is not None:  # a memory-mapped .npy (large synthetic scales, decoded stores): map nothing
            _link_or_copy(source, folder / "images.npy")
        else:
            np.save(folder / "images.npy", np.ascontiguousarray(images.array))
        return {"kind": "array", "file": "images.npy", "image_size": images.image_size}
    if hasattr(images, "describe"):  # lazily decoded files (the Polyvore-U reader)
        desc = images.describe()
        (folder / "images.json").write_text(to_json(desc) + "\n")
        return {"kind": "files", "file": "images.json", "image_size": images.image_size}
    raise DatasetError(f"cannot save an image store of type {type(images).__name__}")


def _load_images(desc: dict, folder: Path, mmap: bool) -> Any:
    if desc["kind"] == "array":
        return ArrayImages(np.load(folder / desc["file"], mmap_mode="r" if mmap else None))
    if desc["kind"] == "files":
        return FileImages.from_description(read_json(folder / desc["file"], fix=f"delete the data folder {folder}, "
                                                     f"or rerun notebooks/00_data.ipynb with overwrite=True"))
    raise DatasetError(f"unknown image store kind {desc['kind']!r} in {folder / 'dataset.json'}")


def outfit_hashes(outfit_items: np.ndarray) -> np.ndarray:
    """An order-free 64-bit hash per outfit row (the set of item ids, -1 ignored).

    Used to reject random mixtures that equal a positive outfit exactly.
    """
    rows = np.sort(np.asarray(outfit_items, dtype=np.int64), axis=1).astype(np.uint64)
    h = np.full(rows.shape[0], np.uint64(1469598103934665603))
    prime = np.uint64(1099511628211)
    with np.errstate(over="ignore"):
        for s in range(rows.shape[1]):
            h = (h ^ (rows[:, s] + np.uint64(0x9E3779B97F4A7C15))) * prime
    return h


def split_sizes(n_outfits: int) -> dict[str, int]:
    """Per-user 9:2:2 train/val/test, the validation part halved (paper §4.1.1).

    ``val_teacher`` gets the larger half. Every user with at least 4 outfits gets at least one
    test outfit and one validation outfit; train keeps the rest.
    """
    if n_outfits < 1:
        raise DatasetError(f"a user needs at least one outfit, got {n_outfits}")
    n_test = int(round(n_outfits * 2 / 13))
    n_val = int(round(n_outfits * 2 / 13))
    if n_outfits >= 4:
        n_test, n_val = max(n_test, 1), max(n_val, 1)
    n_train = n_outfits - n_test - n_val
    n_val_teacher = (n_val + 1) // 2
    return {"train": n_train, "val_teacher": n_val_teacher,
            "val_student": n_val - n_val_teacher, "test": n_test}
