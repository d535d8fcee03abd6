"""Reader for the real Polyvore-U datasets (the Fashion-Hash-Net release, Lu et al. 2019).

Converts one ``tuples_<U>/`` folder (optionally plus a cold-start folder) into the canonical
:class:`~fndkit.data.schema.OutfitDataset`, keeping the released train/val/test split and its fixed
evaluation negatives. Layout read (``root`` is the release folder)::

    root/images/291x291/<name>.jpg            item images (or an LMDB, e.g. root/images/lmdb/data.mdb,
                                              keyed by file name, values JPEG bytes)
    root/tuples_<U>/image_list_{top,bottom,shoe}   one file name per line; line n = item n
    root/tuples_<U>/tuples_{train,val,test}_posi   CSV with header user,top,bottom,shoe
    root/tuples_<U>/tuples_{train,val,test}_nega   (variable size: user,top,top,bottom,shoe,
    root/tuples_<U>/tuples_{train,val,test}_nega_hard   -1 = no second top); ".csv" optional

Negative row ``i`` of a ``_nega`` file belongs to positive row ``i // ratio`` of the matching
``_posi`` file (``ratio = len(nega) // len(posi)``, 10 in the release).

Mapping to the canonical form:

* items: top, bottom and shoe lists concatenated (global id = list offset + local index); a cold
  subset's lists are appended after them with their own offsets.
* outfits (positives only), in file order: train rows -> ``train``; val rows -> ``val_teacher`` /
  ``val_student`` (per user, the first half of that user's val rows in file order go to the
  teacher, who gets the larger half); test rows -> ``test``; cold subset train+val+test rows ->
  ``cold`` (cold user ids follow the trained ones; ``meta["cold_outfit_ranges"]`` gives the
  ``[start, stop)`` outfit ids each cold file's rows occupy, so the released cold test rows can be
  held out of a cold starter's profile).
* candidates ``"<split>/random"`` (``_nega``) and ``"<split>/hard"`` (``_nega_hard``, when the file
  exists) for ``val_teacher``, ``val_student`` and ``test`` (and ``cold`` from the cold subset's
  test files): per positive of the split, in file order, a block of ``1 + ratio`` rows with that
  positive's user — the positive (label 1), then its released negatives (label 0) — the layout
  of :func:`fndkit.data.sampling.build_candidates`. A negative's user column in the file is not
  used: it takes its positive's user.
* the released training negatives are validated but not used: fndkit redraws training negatives
  every epoch (DESIGN §3).

Images stay on disk and are decoded lazily by :class:`FileImages` (resized to ``image_size``).
"""

from __future__ import annotations

import io
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .images import IMAGE_SUFFIXES, FileImages, _check_image_size, image_file_name  # noqa: F401 (re-exported)
from .schema import (CATEGORIES, FIXED_LAYOUT, SPLITS, VARIABLE_LAYOUT, CandidateSet,
                     DatasetError, OutfitDataset)

POLYVORE_SUBSETS = ("630", "519", "53", "32")
FIXED_HEADER = ("user", "top", "bottom", "shoe")
VARIABLE_HEADER = ("user", "top", "top", "bottom", "shoe")
IMAGE_FOLDER = "291x291"
_CSV_SUFFIXES = ("", ".csv")
_LIST_SUFFIXES = ("", ".txt")


# --------------------------------------------------------------------------------------------
# Tuple files


@dataclass
class _Table:
    """One tuples CSV: ``rows`` int64 ``[N, 1 + n_slots]`` (user, then item indices)."""

    path: Path
    header: tuple[str, ...]
    rows: np.ndarray
    lines: np.ndarray | None = None   # 1-based line number of each row, computed on demand

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def line_of(self, row: int) -> int:
        if self.lines is None:
            self.lines = _parse_rows_slowly(self.path, self.header)[1]
        return int(self.lines[row])


@dataclass
class _Folder:
    """One ``tuples_<U>`` folder, validated."""

    path: Path
    subset: str
    image_lists: list[list[str]]          # per category, local index -> list entry
    list_paths: list[Path]
    header: tuple[str, ...]
    posi: dict[str, _Table]               # split (train/val/test) -> positives
    nega: dict[str, _Table] = field(default_factory=dict)       # random negatives
    nega_hard: dict[str, _Table] = field(default_factory=dict)  # hard negatives
    ratios: dict[str, int] = field(default_factory=dict)        # "<split>/<protocol>" -> ratio

    @property
    def slot_categories(self) -> tuple[int, ...]:
        return VARIABLE_LAYOUT if self.header == VARIABLE_HEADER else FIXED_LAYOUT


def _find_file(folder: Path, stem: str, suffixes: tuple[str, ...], required: bool) -> Path | None:
    for suffix in suffixes:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    if required:
        names = " or ".join(f"{stem}{s}" for s in suffixes)
        raise DatasetError(f"{folder}: missing file {names} (expected the Fashion-Hash-Net "
                           f"Polyvore-U layout; see fndkit/data/polyvore.py)")
    return None


def _read_image_list(path: Path) -> list[str]:
    entries = path.read_text(encoding="utf-8-sig").splitlines()
    entries = [e.strip() for e in entries]
    while entries and not entries[-1]:
        entries.pop()
    if "" in entries:
        line = entries.index("") + 1
        raise DatasetError(f"{path}, line {line}: empty line inside the image list (line n is "
                           f"item n-1, so a gap would shift every later item); remove it")
    return entries


def _parse_header(path: Path, expected: tuple[str, ...] | None) -> tuple[str, ...]:
    with open(path, encoding="utf-8-sig") as f:
        first = f.readline()
    if not first.strip():
        raise DatasetError(f"{path}, line 1: empty file or empty header; expected the header "
                           f"{','.join(FIXED_HEADER)} (fixed-size) or {','.join(VARIABLE_HEADER)} "
                           f"(variable-size)")
    found = tuple(col.strip().lower() for col in first.strip().split(","))
    if expected is not None and found != expected:
        raise DatasetError(f"{path}, line 1: header {','.join(found)!r} does not match the "
                           f"folder's layout; expected {','.join(expected)!r} (the header of "
                           f"tuples_train_posi)")
    if found not in (FIXED_HEADER, VARIABLE_HEADER):
        raise DatasetError(f"{path}, line 1: bad header {first.strip()!r}; expected "
                           f"{','.join(FIXED_HEADER)!r} (fixed-size) or "
                           f"{','.join(VARIABLE_HEADER)!r} (variable-size)")
    return found


def _read_table(path: Path, expected_header: tuple[str, ...] | None) -> _Table:
    header = _parse_header(path, expected_header)
    n_fields = len(header)
    # Fast path: numpy's C parser is strict about integers and field counts. On any complaint,
    # the line-by-line parser below finds the line and says what is wrong with it.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "input contained no data"
            rows = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2,
                              comments=None, encoding="utf-8-sig")
        if rows.size == 0:
            rows = rows.reshape(0, n_fields)
        if rows.shape[1] != n_fields:
            raise ValueError("field count")
        return _Table(path, header, rows)
    except ValueError:
        rows, lines = _parse_rows_slowly(path, header)
        return _Table(path, header, rows, lines)


def _parse_rows_slowly(path: Path, header: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    n_fields = len(header)
    rows, lines = [], []
    with open(path, encoding="utf-8-sig") as f:
        next(f, None)
        for line_no, line in enumerate(f, start=2):
            text = line.strip()
            if not text:
                continue
            fields = text.split(",")
            if len(fields) != n_fields:
                raise DatasetError(f"{path}, line {line_no}: {len(fields)} fields, expected "
                                   f"{n_fields} ({','.join(header)}): {text!r}; a truncated or edited "
                                   f"file? copy it again from the release")
            try:
                values = [int(v) for v in fields]
            except ValueError:
                col = next(j for j, v in enumerate(fields) if not _is_int(v))
                raise DatasetError(f"{path}, line {line_no}: field {col + 1} ({header[col]}) is "
                                   f"{fields[col].strip()!r}, not an integer") from None
            big = [j for j, v in enumerate(values) if abs(v) >= 2 ** 62]
            if big:
                raise DatasetError(f"{path}, line {line_no}: field {big[0] + 1} "
                                   f"({header[big[0]]}) = {values[big[0]]} is far too large")
            rows.append(values)
            lines.append(line_no)
    return (np.asarray(rows, dtype=np.int64).reshape(-1, n_fields),
            np.asarray(lines, dtype=np.int64))


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _check_table(table: _Table, folder: _Folder) -> None:
    """Raise naming the first line whose user id or item index is invalid."""
    rows, header = table.rows, table.header
    if len(table) == 0:
        return
    variable = header == VARIABLE_HEADER
    bad = np.zeros(rows.shape, dtype=bool)
    bad[:, 0] = rows[:, 0] < 0
    for s, cat in enumerate(folder.slot_categories):
        col = rows[:, s + 1]
        n = len(folder.image_lists[cat])
        bad[:, s + 1] = (col < 0) | (col >= n)
        if variable and s == 1:   # only the second top may be absent
            bad[:, s + 1] &= col != -1
    if not bad.any():
        return
    r, c = map(int, np.argwhere(bad)[0])
    value = int(rows[r, c])
    where = f"{table.path}, line {table.line_of(r)}"
    if value == -1:
        raise DatasetError(f"{where}: -1 (absent) in column {c + 1} ({header[c]}); only the "
                           f"second top of a variable-size file (user,top,top,bottom,shoe) may "
                           f"be -1")
    if c == 0:
        raise DatasetError(f"{where}: user id {value} is negative; user ids are 0-based")
    cat = folder.slot_categories[c - 1]
    n = len(folder.image_lists[cat])
    raise DatasetError(f"{where}: {CATEGORIES[cat]} index {value} (column {c + 1}) is out of "
                       f"range for {folder.list_paths[cat].name} ({n} items, valid 0..{n - 1})")


def _negative_ratio(posi: _Table, nega: _Table) -> int:
    P, N = len(posi), len(nega)
    if (P == 0 and N > 0) or (P > 0 and N % P):
        raise DatasetError(f"{nega.path}: {N} negative rows is not a multiple of the {P} "
                           f"positive rows in {posi.path.name}; negative row i must belong to "
                           f"positive row i // ratio")
    return N // P if P else 0


def _read_folder(root: Path, subset: str) -> _Folder:
    path = root / f"tuples_{subset}"
    if not path.is_dir():
        raise DatasetError(f"missing folder {path} for Polyvore-{subset}; expected {root} to hold "
                           f"tuples_{subset}/ (image lists and tuples files) and images/")
    list_paths = [_find_file(path, f"image_list_{cat}", _LIST_SUFFIXES, True)
                  for cat in CATEGORIES]
    image_lists = [_read_image_list(p) for p in list_paths]
    header = None
    posi = {}
    for split in ("train", "val", "test"):
        table = _read_table(_find_file(path, f"tuples_{split}_posi", _CSV_SUFFIXES, True), header)
        header = header or table.header
        posi[split] = table
    folder = _Folder(path, subset, image_lists, list_paths, header, posi)
    for table in posi.values():
        _check_table(table, folder)
    for split in ("train", "val", "test"):
        # Training negatives are redrawn each epoch, so their files are optional (checked if present).
        for suffix, store, protocol, required in (("nega", folder.nega, "random", split != "train"),
                                                  ("nega_hard", folder.nega_hard, "hard", False)):
            file = _find_file(path, f"tuples_{split}_{suffix}", _CSV_SUFFIXES, required)
            if file is None:
                continue
            table = _read_table(file, header)
            _check_table(table, folder)
            folder.ratios[f"{split}/{protocol}"] = _negative_ratio(posi[split], table)
            store[split] = table
    return folder


# --------------------------------------------------------------------------------------------
# Assembly


def _subset_name(value: Any, what: str) -> str:
    name = str(value) if isinstance(value, (str, int, np.integer)) and not isinstance(value, bool) \
        else None
    if name not in POLYVORE_SUBSETS:
        raise DatasetError(f"unknown Polyvore-U {what} {value!r}; valid choices: "
                           f"{', '.join(POLYVORE_SUBSETS)}")
    return name


def _find_images(root: Path, image_layout: str | None) -> tuple[str, Path]:
    images = root / "images"
    if image_layout not in (None, "files", "lmdb"):
        raise DatasetError(f"unknown image_layout {image_layout!r}; valid: None (detect), "
                           f"'files', 'lmdb'")
    expected = (f"expected {images / IMAGE_FOLDER}/<name>.jpg or an LMDB folder such as "
                f"{images / 'lmdb'} (holding data.mdb)")
    if not images.is_dir():
        raise DatasetError(f"missing folder {images}; {expected}")
    files = images / IMAGE_FOLDER
    if image_layout != "lmdb" and files.is_dir():
        return "files", files
    candidates = [images] + sorted((p for p in images.iterdir() if p.is_dir()),
                                   key=lambda p: (p.name != "lmdb", p.name))
    lmdbs = [p for p in candidates if (p / "data.mdb").is_file()]
    if image_layout != "files" and lmdbs:
        return "lmdb", lmdbs[0]
    raise DatasetError(f"no {image_layout or 'image'} layout found under {images}; {expected}")


def val_teacher_mask(users: np.ndarray) -> np.ndarray:
    """bool ``[V]``: the first ceil(n_u / 2) of each user's val rows (file order) -> teacher."""
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.searchsorted(sorted_users, sorted_users, side="left")
    counts = np.bincount(users)[sorted_users]
    rank = np.arange(users.size) - starts
    teacher = np.empty(users.size, dtype=bool)
    teacher[order] = rank < (counts + 1) // 2
    return teacher


def released_candidates(posi_items: np.ndarray, posi_user: np.ndarray, keep: np.ndarray,
                nega_items: np.ndarray, ratio: int) -> CandidateSet:
    """Per kept positive (file order) one block of ``1 + ratio`` rows, all with its user: the
    positive (label 1), then its negatives ``i * ratio .. i * ratio + ratio - 1`` (label 0) — the
    layout :func:`fndkit.data.sampling.build_candidates` uses for generated lists."""
    P, S = posi_items.shape
    blocks = np.concatenate([posi_items[:, None, :], nega_items.reshape(P, ratio, S)], axis=1)
    label = np.zeros((P, 1 + ratio), dtype=np.int8)
    label[:, 0] = 1
    return CandidateSet(user=np.repeat(posi_user[keep], 1 + ratio).astype(np.int64),
                        items=blocks[keep].reshape(-1, S).astype(np.int64),
                        label=label[keep].ravel())


def read_polyvore_u(root: str | os.PathLike, subset: str | int = "630", image_size: int = 32,
                    cold_subset: str | int | None = None,
                    image_layout: str | None = None, check_images: bool = False) -> OutfitDataset:
    """Read a Polyvore-U release folder into the canonical :class:`OutfitDataset`.

    root: the release folder (holding ``images/`` and ``tuples_<U>/``). subset: ``"630"``,
    ``"519"`` (variable size), ``"53"`` or ``"32"``. image_size: side S of the decoded images
    (uint8 ``[k, S, S, 3]``). cold_subset: optionally a second folder (``"53"`` for 630, ``"32"``
    for 519; same slot layout) whose users become the cold-start pool. image_layout: ``None``
    picks ``images/291x291`` when present, else an LMDB under ``images/``; ``"files"`` or
    ``"lmdb"`` forces one. Every tuples file is validated; a bad one raises :class:`DatasetError`
    naming the file and line. check_images: also decode every image once now (00_data does), so
    that a corrupt or truncated file, or a key missing from the LMDB, fails here naming the item
    and its list line rather than mid-training (about 0.3 ms an image at 32 px). See the module
    docstring for the mapping.
    """
    subset = _subset_name(subset, "subset")
    cold = None if cold_subset is None else _subset_name(cold_subset, "cold_subset")
    if cold == subset:
        raise DatasetError(f"cold_subset {cold!r} equals subset; pick a different folder "
                           f"(53 for 630, 32 for 519)")
    image_size = _check_image_size(image_size)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Polyvore-U folder {root} does not exist")
    kind, image_root = _find_images(root, image_layout)

    main = _read_folder(root, subset)
    folders = [main]
    if cold is not None:
        cold_folder = _read_folder(root, cold)
        if cold_folder.header != main.header:
            raise DatasetError(
                f"tuples_{cold} has layout {','.join(cold_folder.header)!r} but tuples_{subset} "
                f"has {','.join(main.header)!r}; pair fixed with fixed (630 + 53) and variable "
                f"with variable (519 + 32)")
        folders.append(cold_folder)

    # Items: per folder, the top, bottom and shoe lists one after another.
    names, item_category, offsets = [], [], []
    for folder in folders:
        folder_offsets = []
        for cat, entries in enumerate(folder.image_lists):
            folder_offsets.append(len(names))
            names.extend(entries)
            item_category.extend([cat] * len(entries))
        offsets.append(np.asarray(folder_offsets, dtype=np.int64))
    slot_categories = np.asarray(main.slot_categories, dtype=np.int8)

    def to_global(rows: np.ndarray, folder_offsets: np.ndarray) -> np.ndarray:
        local = rows[:, 1:]
        return np.where(local >= 0, local + folder_offsets[slot_categories], -1)

    # Trained users: ids as released; every user in the posi files counts.
    n_trained = 1 + max((int(t.rows[:, 0].max()) for t in main.posi.values() if len(t)), default=-1)
    outfit_items, outfit_user, outfit_split = [], [], []

    def add(items: np.ndarray, users: np.ndarray, splits: np.ndarray) -> None:
        outfit_items.append(items)
        outfit_user.append(users)
        outfit_split.append(splits.astype(np.int8))

    posi_items = {s: to_global(t.rows, offsets[0]) for s, t in main.posi.items()}
    posi_user = {s: t.rows[:, 0].copy() for s, t in main.posi.items()}
    val_teacher = val_teacher_mask(posi_user["val"])
    for split in ("train", "val", "test"):
        n = len(main.posi[split])
        if split == "val":
            codes = np.where(val_teacher, SPLITS.index("val_teacher"), SPLITS.index("val_student"))
        else:
            codes = np.full(n, SPLITS.index(split))
        add(posi_items[split], posi_user[split], codes)

    keep = {"val_teacher": ("val", val_teacher), "val_student": ("val", ~val_teacher),
            "test": ("test", np.ones(len(main.posi["test"]), dtype=bool))}
    candidates = {}
    for split, (file_split, mask) in keep.items():
        for protocol, store in (("random", main.nega), ("hard", main.nega_hard)):
            if file_split in store:
                candidates[f"{split}/{protocol}"] = released_candidates(
                    posi_items[file_split], posi_user[file_split], mask,
                    to_global(store[file_split].rows, offsets[0]),
                    main.ratios[f"{file_split}/{protocol}"])

    n_cold, cold_ranges = 0, {}
    if cold is not None:
        cold_folder = folders[1]
        start = sum(len(x) for x in outfit_items)
        n_cold = 1 + max((int(t.rows[:, 0].max()) for t in cold_folder.posi.values() if len(t)),
                         default=-1)
        for split in ("train", "val", "test"):
            rows = cold_folder.posi[split].rows
            add(to_global(rows, offsets[1]), rows[:, 0] + n_trained,
                np.full(len(rows), SPLITS.index("cold")))
            cold_ranges[split] = [start, start + len(rows)]
            start += len(rows)
        test = cold_folder.posi["test"]
        for protocol, store in (("random", cold_folder.nega), ("hard", cold_folder.nega_hard)):
            if "test" in store:
                candidates[f"cold/{protocol}"] = released_candidates(
                    to_global(test.rows, offsets[1]), test.rows[:, 0] + n_trained,
                    np.ones(len(test), dtype=bool), to_global(store["test"].rows, offsets[1]),
                    cold_folder.ratios[f"test/{protocol}"])

    images = FileImages(image_root, [image_file_name(n) for n in names] if kind == "files"
                        else names, image_size=image_size, kind=kind)
    if kind == "files":
        _check_image_files(images, folders)
    if check_images:
        _check_images_decode(images, folders)

    S = len(slot_categories)
    ratios = {f"{'cold/' if f is not main else ''}{k}": v
              for f in folders for k, v in f.ratios.items()}
    dataset = OutfitDataset(
        name=f"polyvore-{subset}",
        item_category=np.asarray(item_category, dtype=np.int8),
        outfit_items=np.concatenate(outfit_items).astype(np.int64).reshape(-1, S),
        outfit_user=np.concatenate(outfit_user).astype(np.int64),
        outfit_split=np.concatenate(outfit_split).astype(np.int8),
        slot_categories=slot_categories,
        user_pool=np.concatenate([np.zeros(n_trained, np.int8), np.ones(n_cold, np.int8)]),
        images=images,
        candidates=candidates,
        meta={"source": "polyvore-u", "root": str(root), "subset": subset, "cold_subset": cold,
              "image_size": image_size, "image_layout": kind,
              "negative_ratio": main.ratios.get("test/random", 0),
              "negative_ratios": ratios, "cold_outfit_ranges": cold_ranges},
    )
    return dataset.validate()


def _list_origin(item: int, folders: list[_Folder]) -> str:
    """Which image-list line global item ``item`` came from, so it can be looked up by hand."""
    start = 0
    for folder in folders:
        for cat, entries in enumerate(folder.image_lists):
            if item < start + len(entries):
                return f"line {item - start + 1} of {folder.list_paths[cat]}"
            start += len(entries)
    return "no image list"


def _check_images_decode(images: FileImages, folders: list[_Folder]) -> None:
    from tqdm.auto import tqdm

    for item in tqdm(range(len(images)), desc="checking images", disable=len(images) < 2000):
        try:
            images._decode(item)  # not get(): no cache to fill
        except DatasetError as exc:
            raise DatasetError(f"{exc} (item {item} comes from {_list_origin(item, folders)})") from None


def _check_image_files(images: FileImages, folders: list[_Folder]) -> None:
    missing = images.missing_files()
    if not missing:
        return
    first = missing[0]
    origin = _list_origin(first, folders)
    raise DatasetError(f"{len(missing)} of {len(images)} image files are missing under "
                       f"{images.root}; first: {images.names[first]} (item {first}, {origin}). "
                       f"Copy the release's images/291x291 folder there, or use its LMDB")
