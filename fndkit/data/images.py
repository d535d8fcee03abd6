"""Image stores decoded on demand: item images from a folder of files or an LMDB database.

(The in-memory / memory-mapped store, :class:`~fndkit.data.schema.ArrayImages`, lives with the
schema.) The Polyvore-U reader and the bring-your-own-data folder reader both use
:class:`FileImages`; the canonical dataset saves and reloads it through ``describe()``.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..config import check_int
from .errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CACHE_BYTES = 64 * 2 ** 20




def image_file_name(list_entry: str) -> str:
    """The file name an image-list entry refers to: the entry itself if it already ends in an
    image suffix (the release writes ``<sha1>.jpg``), else the entry plus ``.jpg``."""
    return list_entry if list_entry.lower().endswith(IMAGE_SUFFIXES) else list_entry + ".jpg"


class FileImages:
    """Item images decoded on demand from a folder of image files or from an LMDB database.

    ``names[i]`` is item ``i``'s file name (``kind="files"``: a path relative to ``root``) or its
    LMDB key (``kind="lmdb"``: ``root`` is the LMDB environment folder; a key is also tried with
    ``.jpg`` added or removed). Each image is converted to RGB and resized to
    ``image_size x image_size``; recently decoded images are kept in a small LRU cache. Implements
    the ``ImageStore`` protocol of :mod:`fndkit.data.schema`, and ``describe`` /
    ``from_description`` so that ``OutfitDataset.save`` / ``load`` can store it as JSON.
    Picklable (for DataLoader workers): the LMDB handle and the cache are not pickled.
    """

    KINDS = ("files", "lmdb")

    def __init__(self, root: str | os.PathLike, names: list[str], image_size: int = 32,
                 kind: str = "files", cache_items: int | None = None):
        if kind not in self.KINDS:
            raise DatasetError(f"unknown image layout kind {kind!r}; valid kinds: "
                               f"{', '.join(self.KINDS)}")
        self.image_size = _check_image_size(image_size)
        self.root = Path(root)
        self.kind = kind
        self.names = [str(n) for n in names]
        # Default cache: about 64 MiB of decoded images, whatever the image size.
        per_image = self.image_size * self.image_size * 3
        self.cache_items = (max(1, _CACHE_BYTES // per_image) if cache_items is None
                            else int(cache_items))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._env = None
        self._env_pid = None

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"FileImages(kind={self.kind!r}, root={str(self.root)!r}, n={len(self)}, "
                f"image_size={self.image_size})")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"], state["_env"], state["_env_pid"] = OrderedDict(), None, None
        return state

    # ---- ImageStore ------------------------------------------------------------------------
    def get(self, item_ids: Any) -> np.ndarray:
        """Images of ``item_ids`` (any integer array shape ``[...]``) as uint8 ``[..., S, S, 3]``."""
        ids = np.asarray(item_ids)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise DatasetError(f"item ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64, copy=False)
        flat = ids.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            bad = int(flat[(flat < 0) | (flat >= len(self))][0])
            raise DatasetError(f"item id {bad} is outside 0..{len(self) - 1}; mask absent "
                               f"slots (-1) out before asking for their images")
        S = self.image_size
        out = np.empty((flat.size, S, S, 3), dtype=np.uint8)
        for k, item in enumerate(flat.tolist()):
            out[k] = self._image(item)
        return out.reshape(ids.shape + (S, S, 3))

    # ---- persistence -----------------------------------------------------------------------
    def describe(self) -> dict:
        """A JSON-able description from which :meth:`from_description` rebuilds this store."""
        return {"root": str(self.root), "kind": self.kind, "names": list(self.names),
                "image_size": self.image_size, "cache_items": self.cache_items}

    @classmethod
    def from_description(cls, desc: dict) -> "FileImages":
        missing = [k for k in ("root", "kind", "names", "image_size") if k not in desc]
        if missing:
            raise DatasetError(f"image description lacks {', '.join(missing)}; regenerate the "
                               f"dataset folder with notebooks/00_data.ipynb")
        return cls(desc["root"], desc["names"], image_size=desc["image_size"], kind=desc["kind"],
                   cache_items=desc.get("cache_items"))

    # ---- checks ----------------------------------------------------------------------------
    def missing_files(self) -> list[int]:
        """Item ids whose image file does not exist (``kind="files"`` only; LMDB keys are checked
        when read)."""
        if self.kind != "files":
            return []
        try:
            present = set(os.listdir(self.root))
        except FileNotFoundError:
            return list(range(len(self)))
        # Names with a folder part cannot be found in the listing; ask the file system for those.
        return [i for i, name in enumerate(self.names)
                if (name not in present if "/" not in name and os.sep not in name
                    else not (self.root / name).is_file())]

    # ---- decoding --------------------------------------------------------------------------
    def _image(self, item: int) -> np.ndarray:
        cached = self._cache.get(item)
        if cached is not None:
            self._cache.move_to_end(item)
            return cached
        image = self._decode(item)
        self._cache[item] = image
        if len(self._cache) > self.cache_items:
            self._cache.popitem(last=False)
        return image

    def _decode(self, item: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        where = self._where(item)
        source = self._open(item, where)
        S = self.image_size
        try:
            with Image.open(source) as img:
                # JPEG only: let the decoder shrink by 1/2..1/8 (never below S) before resizing.
                img.draft("RGB", (S, S))
                rgb = img.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"cannot decode the image of item {item} ({where}): {exc}; the file is "
                               f"corrupt or truncated: replace it (copy it again from the source) and "
                               f"rerun (00_data checks every image; a training stage resumes from its "
                               f"last.pt)") from exc
        if rgb.size != (S, S):
            rgb = rgb.resize((S, S), Image.Resampling.LANCZOS)
        return np.asarray(rgb, dtype=np.uint8)

    def _where(self, item: int) -> str:
        if self.kind == "files":
            return str(self.root / self.names[item])
        return f"key {self.names[item]!r} of the LMDB at {self.root}"

    def _open(self, item: int, where: str) -> Any:
        if self.kind == "files":
            path = self.root / self.names[item]
            if not path.is_file():
                raise DatasetError(f"image file {path} of item {item} is missing; was the "
                                   f"source folder (Polyvore-U release or outfit folder) moved or "
                                   f"changed? put it back, or rerun notebooks/00_data.ipynb on it "
                                   f"with overwrite=True")
            return path
        name = self.names[item]
        with self._lmdb().begin(write=False) as txn:
            for key in _lmdb_keys(name):
                data = txn.get(key.encode())
                if data is not None:
                    return io.BytesIO(data)
        raise DatasetError(f"the LMDB at {self.root} has no image for item {item} (tried keys "
                           f"{', '.join(repr(k) for k in _lmdb_keys(name))}); it must be keyed by "
                           f"the file names of the image lists: add the image under that key, or "
                           f"use the release's images/291x291 folder instead")

    def _lmdb(self) -> Any:
        if self._env is None or self._env_pid != os.getpid():
            self._env, self._env_pid = _open_lmdb(self.root), os.getpid()
        return self._env


# py-lmdb refuses to open one environment twice in a process (two datasets, or a saved copy, may
# share the release's LMDB), and a handle must not cross a fork (DataLoader workers): one shared
# read-only handle per (folder, process).
_LMDB_ENVS: dict[tuple[str, int], Any] = {}


def _open_lmdb(path: Path) -> Any:
    key = (os.path.realpath(path), os.getpid())
    if key not in _LMDB_ENVS:
        try:
            import lmdb
        except ImportError as exc:
            raise DatasetError("reading the LMDB image layout needs the 'lmdb' package "
                               "(pip install lmdb), or use images/291x291/*.jpg") from exc
        if not (path / "data.mdb").is_file():
            raise DatasetError(f"no LMDB database at {path} (missing data.mdb)")
        _LMDB_ENVS[key] = lmdb.open(str(path), readonly=True, lock=False, readahead=False,
                                    meminit=False)
    return _LMDB_ENVS[key]


def _lmdb_keys(name: str) -> list[str]:
    keys = [name]
    stem, dot, suffix = name.rpartition(".")
    if dot and ("." + suffix.lower()) in IMAGE_SUFFIXES:
        keys.append(stem)
    else:
        keys.append(name + ".jpg")
    return keys


def _check_image_size(image_size: Any) -> int:
    return check_int("image_size", image_size, 1, " (e.g. 32)", error=DatasetError)


