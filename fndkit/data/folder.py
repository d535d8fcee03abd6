"""Bring your own data: read an *outfit folder* (three small CSV files and images) into the
canonical :class:`~fndkit.data.schema.OutfitDataset`.

The format
==========

::

    my_outfits/
      items.csv          one row per item: its id, category and image file
      outfits.csv        one row per positive outfit: who posted it, its split, its items
      negatives.csv      optional: fixed evaluation negatives
      images/...         any layout; items.csv says where each image is

A tiny complete example (three users, the third a cold-start user)::

    items.csv                         outfits.csv                   negatives.csv (optional)
    item_id,category,image            user,split,items              user,split,protocol,items
    t1,top,images/t1.jpg              alice,train,t1 b1 s1          alice,test,random,t1 b2 s1
    t2,top,images/t2.png              alice,val,t2 b1 s1            bob,test,random,t2 b1 s2
    t3,top,images/t3.jpg              alice,test,t3 b2 s2
    b1,bottom,images/b1.jpg           bob,train,t2 b2 s2
    b2,bottom,images/b2.jpg           bob,train,t1 t3 b1 s1
    s1,shoe,images/s1.jpg             bob,test,s1 b1 t1
    s2,shoe,images/s2.jpg             carol,cold,t3 b1 s2

Common rules. Files are UTF-8 CSV with a header line (RFC 4180 quoting allowed, e.g. for a path
holding a comma). Header names are case-insensitive, columns may come in any order, and extra
columns are ignored (keep provenance there). Blank lines are skipped but counted, so an error's
line number is the line an editor shows.

``items.csv`` -- header ``item_id,category,image``.

* ``item_id``: any text without whitespace (outfits list item ids separated by spaces), unique.
  Item ``k`` of the canonical dataset (ids are 0-based) is the ``k``-th row of ``items.csv``;
  ``meta["item_ids"][k]`` is the id written there.
* ``category``: ``top``, ``bottom`` or ``shoe`` (``schema.CATEGORIES``; case-insensitive).
* ``image``: the image file, relative to the folder (an absolute path also works, but the folder
  is then no longer self-contained). Any format and size PIL reads; each image is converted to RGB
  (transparency is dropped: flatten cut-outs onto white first) and resized to ``image_size`` x
  ``image_size`` (non-square images are stretched: pad them to a square first to keep the aspect).

``outfits.csv`` -- header ``user,split,items``. Outfit ``o`` is the ``o``-th row.

* ``user``: any text. Users who have ``cold`` rows form the cold-start pool, every other user is
  a trained user. Canonical user ids: trained users first, then cold users, each pool sorted
  (numerically when every id of the pool is an integer, else as text), so trained users already
  numbered ``0..n-1`` keep their numbers. ``meta["user_ids"][u]`` is the id written for user ``u``.
* ``split``: ``train``, ``val``, ``test`` or ``cold``. ``val`` rows are halved per user like
  Polyvore-U's (paper §4.1.1): the first ceil(n/2) of a user's ``val`` rows (file order) become
  ``val_teacher``, the rest ``val_student``. To choose the halves yourself, write ``val_teacher``
  and ``val_student`` instead (then no ``val`` rows). A user's rows are all ``cold`` or none are,
  and every trained user needs at least one ``train`` row (the model learns a vector per user).
* ``items``: the outfit's item ids separated by spaces: one or two tops, one bottom and one shoe,
  no item twice, in any order. They are put into the slots top, [top], bottom, shoe (two tops keep
  their written order). When some outfit has two tops the dataset is variable-size (four slots,
  ``-1`` for an absent second top, like Polyvore-519), else fixed-size (top, bottom, shoe).

``negatives.csv`` (optional) -- header ``user,split,protocol,items``: fixed evaluation negatives.

* ``split``: ``test`` or ``val`` (or ``val_teacher`` / ``val_student``, as ``outfits.csv`` has
  them); ``protocol``: ``random`` (random mixtures) or ``hard`` (other users' positives).
* For each (split, protocol) written, its rows, in file order, come in groups of the same size
  ``ratio``: group ``k`` holds the negatives of the ``k``-th positive outfit of that split in
  ``outfits.csv``, and each row's ``user`` must be that positive's user (the check that catches a
  misaligned file). They become the candidate list ``"<split>/<protocol>"`` (one positive, then its
  ``ratio`` negatives: the layout of :func:`fndkit.data.sampling.build_candidates`); ``val``
  groups go with their positive's half. ``items`` follow the rules of ``outfits.csv`` (two tops
  only in a variable-size dataset).
* Every (split, protocol) not written -- all of them when the file is absent -- is drawn by the
  chain in 00_data (:func:`fndkit.data.sampling.attach_candidates`), as for the other sources.
  Training negatives are never read: they are redrawn every epoch (DESIGN §3).

Every broken rule raises :class:`~fndkit.data.schema.DatasetError` naming the file, the line and
the fix. ``meta["source"]`` is ``"folder"``. :func:`write_outfit_folder` writes any canonical
dataset (e.g. the synthetic benchmark) in this format: a reference for converters.

In the chain: ``papermill notebooks/00_data.ipynb out.ipynb -p source my_outfits -p format folder``
(``format`` ``"auto"`` also recognises the folder by its two CSV files). The training presets are
then the real-data ones (the AlexNet pair, ImageNet weights when present), and cold start uses the
``cold`` users' outfits as a pool (a released train/test split exists for Polyvore-U only).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .images import FileImages, _check_image_size
# The Polyvore-U reader's rules for the validation halves and for block candidate lists, shared so
# that both real-data sources lay their data out alike.
from .polyvore import released_candidates, val_teacher_mask
from .schema import (CATEGORIES, FIXED_LAYOUT, PROTOCOLS, SPLITS, VARIABLE_LAYOUT, ArrayImages, CandidateSet,
                     DatasetError, OutfitDataset, split_index)

ITEMS_FILE, OUTFITS_FILE, NEGATIVES_FILE = "items.csv", "outfits.csv", "negatives.csv"
ITEMS_COLUMNS = ("item_id", "category", "image")
OUTFITS_COLUMNS = ("user", "split", "items")
NEGATIVES_COLUMNS = ("user", "split", "protocol", "items")
OUTFIT_SPLITS = ("train", "val", "val_teacher", "val_student", "test", "cold")
NEGATIVE_SPLITS = ("val", "val_teacher", "val_student", "test")
IMAGE_STORES = ("auto", "array", "files")
# image_store="auto" keeps the decoded images in memory (saved as images.npy, memory-mapped on load)
# up to this size, and decodes them from the files on demand above it (224 px Polyvore-sized data).
ARRAY_LIMIT_BYTES = 2 ** 30

_SEE = "see fndkit/data/folder.py for the format"
_TOP, _BOTTOM, _SHOE = (CATEGORIES.index(c) for c in ("top", "bottom", "shoe"))


def is_outfit_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` looks like an outfit folder (holds ``items.csv`` and ``outfits.csv``)."""
    root = Path(root)
    return (root / ITEMS_FILE).is_file() and (root / OUTFITS_FILE).is_file()


# --------------------------------------------------------------------------------------------
# CSV files


@dataclass
class _Csv:
    """One CSV file: ``rows[r]`` maps the required column names to stripped text; ``lines[r]`` is
    the 1-based line of row ``r`` (blank lines skipped but counted)."""

    path: Path
    rows: list[dict[str, str]]
    lines: list[int]

    def where(self, r: int) -> str:
        return f"{self.path}, line {self.lines[r]}"


def _read_csv(path: Path, columns: tuple[str, ...]) -> _Csv:
    """Read ``path``; raise naming the line if the header lacks a column or a row is malformed."""
    expected = ",".join(columns)
    rows, lines = [], []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise DatasetError(f"{path}, line 1: empty file or empty header; the first line "
                                   f"must be the header {expected} ({_SEE})")
            names = [h.strip().lower() for h in header]
            repeated = sorted({n for n in names if names.count(n) > 1 and n})
            missing = [c for c in columns if c not in names]
            if repeated or missing:
                problem = (f"column {repeated[0]!r} appears twice" if repeated
                           else f"no column {', '.join(repr(m) for m in missing)}")
                raise DatasetError(f"{path}, line 1: bad header {','.join(header)!r}: {problem}; "
                                   f"expected {expected!r} (any order, extra columns ignored)")
            index = [names.index(c) for c in columns]
            for row in reader:
                if not any(field.strip() for field in row):
                    continue
                if len(row) != len(names):
                    raise DatasetError(
                        f"{path}, line {reader.line_num}: {len(row)} fields, expected "
                        f"{len(names)} ({','.join(names)}): {','.join(row)!r}; quote a field "
                        f"that holds a comma")
                rows.append({c: row[j].strip() for c, j in zip(columns, index)})
                lines.append(reader.line_num)
    except FileNotFoundError:
        raise DatasetError(f"missing file {path}; an outfit folder holds {ITEMS_FILE} and "
                           f"{OUTFITS_FILE} (and optionally {NEGATIVES_FILE}); {_SEE}") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}, line {reader.line_num}: not valid CSV ({exc}); "
                           f"{_SEE}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}, line {_first_non_utf8_line(path)}: not UTF-8 text "
                           f"({exc.reason}); save the file as UTF-8") from None
    return _Csv(path, rows, lines)


def _first_non_utf8_line(path: Path) -> int:
    """The 1-based number of the first line that is not valid UTF-8 (the decoder's error offset
    counts from the start of a buffered chunk, not of the file, so it cannot say)."""
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return 1


# --------------------------------------------------------------------------------------------
# Tables


@dataclass
class _Items:
    ids: list[str]               # written item ids, in items.csv order (= canonical item ids)
    index: dict[str, int]        # written id -> canonical id
    category: np.ndarray         # int8 [I]
    images: list[str]            # image paths as written
    table: _Csv


def _read_items(root: Path) -> _Items:
    table = _read_csv(root / ITEMS_FILE, ITEMS_COLUMNS)
    if not table.rows:
        raise DatasetError(f"{table.path}: no items (only a header); add one row per item")
    ids, index, category, images = [], {}, [], []
    for r, row in enumerate(table.rows):
        item, cat, image = row["item_id"], row["category"].lower(), row["image"]
        if not item or any(ch.isspace() for ch in item):
            raise DatasetError(f"{table.where(r)}: item id {item!r} is empty or holds whitespace; "
                               f"outfits list item ids separated by spaces, so an id must be one "
                               f"word")
        if item in index:
            raise DatasetError(f"{table.where(r)}: item id {item!r} is already used on line "
                               f"{table.lines[index[item]]}; item ids must be unique")
        if cat not in CATEGORIES:
            raise DatasetError(f"{table.where(r)}: unknown category {row['category']!r} of item "
                               f"{item!r}; valid: {', '.join(CATEGORIES)} (map your categories "
                               f"onto these and leave out items of other categories)")
        if not image:
            raise DatasetError(f"{table.where(r)}: item {item!r} has no image path; give its "
                               f"image file, relative to {root}")
        index[item] = len(ids)
        ids.append(item)
        category.append(CATEGORIES.index(cat))
        images.append(image)
    return _Items(ids, index, np.asarray(category, dtype=np.int8), images, table)


def _parse_outfit(text: str, items: _Items, variable: bool | None, where: str) -> list[int]:
    """The canonical item ids of one ``items`` field in slot order: top, [top], bottom, shoe.

    ``variable``: ``None`` while the layout is not known yet (positives; two tops allowed),
    ``False`` for a fixed-size dataset (two tops refused), ``True`` for a variable-size one.
    """
    words = text.split()
    if not words:
        raise DatasetError(f"{where}: empty outfit (the items field lists no item ids); list its "
                           f"top(s), bottom and shoe separated by spaces, or drop the row")
    ids = []
    for word in words:
        if word not in items.index:
            raise DatasetError(f"{where}: item {word!r} is not in {items.table.path}; add it "
                               f"there or correct the id")
        if word in words[:len(ids)]:
            raise DatasetError(f"{where}: item {word!r} appears twice in the outfit; list each "
                               f"item once")
        ids.append(items.index[word])
    by_cat = [[i for i in ids if items.category[i] == c] for c in range(len(CATEGORIES))]
    counts = [len(found) for found in by_cat]
    max_tops = 1 if variable is False else 2
    if not (1 <= counts[_TOP] <= max_tops and counts[_BOTTOM] == 1 and counts[_SHOE] == 1):
        found = ", ".join(f"{n} {CATEGORIES[c]}{'s' if n != 1 else ''}"
                          for c, n in enumerate(counts))
        need = ("one top (no outfit in outfits.csv has two, so the dataset is fixed-size)"
                if max_tops == 1 else "one or two tops")
        raise DatasetError(f"{where}: the outfit has {found}; an outfit needs {need}, one bottom "
                           f"and one shoe (drop or fix the row)")
    return by_cat[_TOP] + by_cat[_BOTTOM] + by_cat[_SHOE]


def _slot_rows(outfits: list[list[int]], variable: bool) -> np.ndarray:
    """Outfits (slot-ordered id lists) -> int64 ``[N, S]``; a one-top outfit of a variable-size
    dataset gets -1 in the second top slot."""
    S = len(VARIABLE_LAYOUT if variable else FIXED_LAYOUT)
    rows = np.full((len(outfits), S), -1, dtype=np.int64)
    for r, ids in enumerate(outfits):
        if variable and len(ids) == 3:
            ids = [ids[0], -1, ids[1], ids[2]]
        rows[r] = ids
    return rows


def _user_order(names: list[str]) -> list[str]:
    """Users sorted numerically when every id is an integer, else as text."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


@dataclass
class _Outfits:
    items: np.ndarray            # int64 [O, S]
    user: np.ndarray             # int64 [O], canonical user ids
    split: list[str]             # split as written, per outfit
    user_ids: list[str]          # canonical user id -> written id
    n_trained: int
    variable: bool
    table: _Csv


def _read_outfits(root: Path, items: _Items) -> _Outfits:
    table = _read_csv(root / OUTFITS_FILE, OUTFITS_COLUMNS)
    if not table.rows:
        raise DatasetError(f"{table.path}: no outfits (only a header); add one row per outfit")
    slots, users, splits = [], [], []
    first_line: dict[str, int] = {}     # user -> row of their first outfit
    cold_of: dict[str, bool] = {}
    has_train: set[str] = set()
    for r, row in enumerate(table.rows):
        user, split = row["user"], row["split"].lower()
        if not user:
            raise DatasetError(f"{table.where(r)}: empty user; every outfit needs the id of the "
                               f"user who posted it")
        if split not in OUTFIT_SPLITS:
            raise DatasetError(f"{table.where(r)}: unknown split {row['split']!r}; valid: "
                               f"{', '.join(OUTFIT_SPLITS)}")
        cold = split == "cold"
        if user in cold_of and cold_of[user] != cold:
            first = first_line[user]
            raise DatasetError(
                f"{table.where(r)}: user {user!r} has a {split} outfit here but a "
                f"{table.rows[first]['split']} outfit on line {table.lines[first]}; a cold-start "
                f"user's outfits must all be 'cold' and a trained user's none")
        cold_of.setdefault(user, cold)
        first_line.setdefault(user, r)
        if split == "train":
            has_train.add(user)
        slots.append(_parse_outfit(row["items"], items, None, table.where(r)))
        users.append(user)
        splits.append(split)

    halves = {"val_teacher", "val_student"} & set(splits)
    if "val" in splits and halves:
        r = next(k for k, split in enumerate(splits) if split in halves)
        raise DatasetError(f"{table.where(r)}: split {splits[r]!r} here, but line "
                           f"{table.lines[splits.index('val')]} uses 'val'; write either 'val' "
                           f"(halved per user by the reader) or val_teacher and val_student")
    no_train = [u for u in first_line if not cold_of[u] and u not in has_train]
    if no_train:
        r = first_line[no_train[0]]
        more = f" (nor have {len(no_train) - 1} more users)" if len(no_train) > 1 else ""
        raise DatasetError(f"{table.where(r)}: user {no_train[0]!r} has no 'train' outfit{more}; "
                           f"give them training outfits, mark all their outfits 'cold', or drop "
                           f"them")

    trained = _user_order([u for u, c in cold_of.items() if not c])
    user_ids = trained + _user_order([u for u, c in cold_of.items() if c])
    dense = {u: k for k, u in enumerate(user_ids)}
    variable = any(len(s) == 4 for s in slots)
    return _Outfits(_slot_rows(slots, variable), np.asarray([dense[u] for u in users], np.int64),
                    splits, user_ids, len(trained), variable, table)


def _split_codes(outfits: _Outfits) -> tuple[np.ndarray, np.ndarray]:
    """Canonical split per outfit (int8 [O]) and, for the ``val`` rows in file order, whether each
    goes to the teacher (bool [V]; per user the first ceil(n/2), as the Polyvore-U reader does)."""
    written = np.asarray(outfits.split)
    codes = np.zeros(len(written), dtype=np.int8)
    for name in ("train", "val_teacher", "val_student", "test", "cold"):
        codes[written == name] = split_index(name)
    val = np.flatnonzero(written == "val")
    teacher = val_teacher_mask(outfits.user[val]) if val.size else np.zeros(0, dtype=bool)
    codes[val] = np.where(teacher, split_index("val_teacher"), split_index("val_student"))
    return codes, teacher


def _read_negatives(root: Path, items: _Items, outfits: _Outfits,
                    val_teacher: np.ndarray) -> tuple[dict[str, CandidateSet], dict[str, int]]:
    """Candidate lists ``"<split>/<protocol>"`` and their ratios from ``negatives.csv`` (empty
    when the file is absent)."""
    path = root / NEGATIVES_FILE
    if not path.exists():
        return {}, {}
    table = _read_csv(path, NEGATIVES_COLUMNS)
    groups: dict[tuple[str, str], list[int]] = {}   # (split, protocol) -> rows, in file order
    parsed = []
    for r, row in enumerate(table.rows):
        split, protocol = row["split"].lower(), row["protocol"].lower()
        if split not in NEGATIVE_SPLITS:
            hint = (" (training negatives are redrawn every epoch, cold-start lists by the "
                    "cold-start stage: drop these rows)" if split in ("train", "cold") else "")
            raise DatasetError(f"{table.where(r)}: split {row['split']!r} cannot have fixed "
                               f"negatives; valid: {', '.join(NEGATIVE_SPLITS)}{hint}")
        if protocol not in PROTOCOLS:
            raise DatasetError(f"{table.where(r)}: unknown protocol {row['protocol']!r}; valid: "
                               f"{', '.join(PROTOCOLS)}")
        parsed.append(_parse_outfit(row["items"], items, outfits.variable, table.where(r)))
        groups.setdefault((split, protocol), []).append(r)

    written = np.asarray(outfits.split)
    candidates, ratios = {}, {}
    for (split, protocol), rows in groups.items():
        positives = np.flatnonzero(written == split)
        P, N = positives.size, len(rows)
        if P == 0 or N % P:
            raise DatasetError(
                f"{table.where(rows[0])}: the {split}/{protocol} negatives (lines "
                f"{table.lines[rows[0]]}..{table.lines[rows[-1]]}) number {N}, not a multiple of "
                f"the {P} '{split}' outfits in {outfits.table.path.name}; give every {split} "
                f"outfit the same number of negatives, grouped in the order of its outfits")
        ratio = N // P
        for j, r in enumerate(rows):
            o = int(positives[j // ratio])
            owner = outfits.user_ids[int(outfits.user[o])]
            if table.rows[r]["user"] != owner:
                raise DatasetError(
                    f"{table.where(r)}: negative of user {table.rows[r]['user']!r}, but as "
                    f"{split}/{protocol} negative {j + 1} it belongs to {split} outfit "
                    f"{j // ratio + 1} ({outfits.table.path.name} line {outfits.table.lines[o]}), "
                    f"posted by {owner!r}; write {ratio} negatives per {split} outfit, in the "
                    f"order of {outfits.table.path.name}")
        posi_items, posi_user = outfits.items[positives], outfits.user[positives]
        nega_items = _slot_rows([parsed[r] for r in rows], outfits.variable)
        keep = ({"val_teacher": val_teacher, "val_student": ~val_teacher} if split == "val"
                else {split: np.ones(P, dtype=bool)})
        for name, mask in keep.items():
            candidates[f"{name}/{protocol}"] = released_candidates(posi_items, posi_user, mask,
                                                           nega_items, ratio)
            ratios[f"{name}/{protocol}"] = ratio
    return candidates, ratios


# --------------------------------------------------------------------------------------------
# Images


def _load_images(root: Path, items: _Items, image_size: int, image_store: str,
                 check_images: bool, progress: bool) -> tuple[Any, str]:
    """The image store and its kind: every image decoded now into an :class:`ArrayImages`
    (``"array"``), or a :class:`~fndkit.data.images.FileImages` that decodes on demand
    (``"files"``; each image decoded once here when ``check_images``, so that a corrupt file fails
    now, naming its line, rather than mid-training)."""
    from tqdm.auto import tqdm

    if image_store not in IMAGE_STORES:
        raise DatasetError(f"unknown image_store {image_store!r}; valid: {', '.join(IMAGE_STORES)}")
    n = len(items.ids)
    if image_store == "auto":
        image_store = "array" if n * image_size ** 2 * 3 <= ARRAY_LIMIT_BYTES else "files"
    # The resolved root keeps a saved dataset's lazily decoded images findable from any cwd.
    files = FileImages(root.resolve(), items.images, image_size=image_size, kind="files")
    array = (np.empty((n, image_size, image_size, 3), dtype=np.uint8) if image_store == "array"
             else None)

    def where(i: int) -> str:
        return f"{items.table.where(i)}: the image {items.images[i]!r} of item {items.ids[i]!r}"

    for i in tqdm(range(n), desc="images", disable=not progress):
        path = files.root / files.names[i]
        if not path.is_file():
            raise DatasetError(f"{where(i)} does not exist ({path}); paths are relative to {root}")
        if array is None and not check_images:
            continue
        try:
            image = files.get(np.array([i]))[0]
        except Exception as exc:   # PIL raises OSError, SyntaxError, ValueError... on bad files
            reason = exc.__cause__ or exc
            raise DatasetError(f"{where(i)} cannot be read ({type(reason).__name__}: {reason}); "
                               f"replace the file or drop the item") from exc
        if array is not None:
            array[i] = image
    return (ArrayImages(array) if array is not None else files), image_store


# --------------------------------------------------------------------------------------------
# Reading and writing


def read_outfit_folder(root: str | os.PathLike, image_size: int = 32, *, name: str | None = None,
                       image_store: str = "auto", check_images: bool = True,
                       progress: bool = False) -> OutfitDataset:
    """Read an outfit folder (format: the module docstring) into the canonical dataset.

    root: the folder holding ``items.csv``, ``outfits.csv`` (and optionally ``negatives.csv``).
    image_size: side S of the images (uint8 ``[k, S, S, 3]``). name: the dataset's name (default:
    the folder's name). image_store: ``"array"`` decodes every image now and keeps them in memory
    (saved as ``images.npy``, so the run folder no longer needs ``root``); ``"files"`` decodes them
    on demand from ``root`` (for large sets at 224 px); ``"auto"`` picks ``"array"`` up to 1 GiB of
    pixels. check_images (``"files"`` only): decode each image once now, so that a corrupt file is
    reported with its line; ``False`` only checks that the files exist. progress: show a progress
    bar while decoding.

    Returns the validated :class:`OutfitDataset`; candidate lists only for what ``negatives.csv``
    holds (00_data draws the rest). Raises :class:`DatasetError` naming the file, line and fix.
    """
    image_size = _check_image_size(image_size)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"outfit folder {root} does not exist; point it at the folder holding "
                           f"{ITEMS_FILE} and {OUTFITS_FILE}")
    items = _read_items(root)
    outfits = _read_outfits(root, items)
    codes, val_teacher = _split_codes(outfits)
    candidates, ratios = _read_negatives(root, items, outfits, val_teacher)
    images, store_kind = _load_images(root, items, image_size, image_store, check_images, progress)
    n_users = len(outfits.user_ids)
    dataset = OutfitDataset(
        name=name or root.resolve().name,
        item_category=items.category,
        outfit_items=outfits.items,
        outfit_user=outfits.user,
        outfit_split=codes,
        slot_categories=np.asarray(VARIABLE_LAYOUT if outfits.variable else FIXED_LAYOUT,
                                   dtype=np.int8),
        user_pool=(np.arange(n_users) >= outfits.n_trained).astype(np.int8),
        images=images,
        candidates=candidates,
        meta={"source": "folder", "root": str(root.resolve()), "image_size": image_size,
              "image_store": store_kind, "variable_size": outfits.variable,
              "negative_ratio": ratios.get("test/random", 0), "negative_ratios": ratios,
              "user_ids": outfits.user_ids, "item_ids": items.ids},
    )
    return dataset.validate()


def write_outfit_folder(dataset: OutfitDataset, root: str | os.PathLike,
                        image_format: str = "png") -> Path:
    """Write ``dataset`` as an outfit folder that :func:`read_outfit_folder` reads back into the
    same tables, candidates and (with the lossless ``png``) pixels.

    Item and user ids are the ones in ``meta["item_ids"]`` / ``meta["user_ids"]`` when the dataset
    came from a folder, else the canonical numbers. Validation rows are written as ``val_teacher``
    / ``val_student`` so the halves survive; candidate lists laid out one block per positive (as
    every reader and :func:`fndkit.data.sampling.build_candidates` make them) go to
    ``negatives.csv``. ``root`` must not exist yet. A reference for converters: this is all a
    converter from another dataset has to produce.
    """
    root = Path(root)
    if root.exists():
        raise DatasetError(f"{root} already exists; write an outfit folder into a new path")
    dataset.validate()
    item_ids = dataset.meta.get("item_ids") or [str(i) for i in range(dataset.n_items)]
    user_ids = dataset.meta.get("user_ids") or [str(u) for u in range(dataset.n_users)]
    (root / "images").mkdir(parents=True)
    images = []
    from PIL import Image

    for start in range(0, dataset.n_items, 256):
        ids = np.arange(start, min(start + 256, dataset.n_items))
        for i, pixels in zip(ids, dataset.images.get(ids)):
            images.append(f"images/{i}.{image_format}")
            Image.fromarray(pixels).save(root / images[-1])

    def outfit_text(row: np.ndarray) -> str:
        return " ".join(item_ids[i] for i in row if i >= 0)

    with open(root / ITEMS_FILE, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(ITEMS_COLUMNS)
        out.writerows(zip(item_ids, (CATEGORIES[c] for c in dataset.item_category), images))
    with open(root / OUTFITS_FILE, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(OUTFITS_COLUMNS)
        for o in range(dataset.n_outfits):
            out.writerow((user_ids[dataset.outfit_user[o]], SPLITS[dataset.outfit_split[o]],
                          outfit_text(dataset.outfit_items[o])))
    rows = []
    for key in sorted(dataset.candidates):
        split, _, protocol = key.partition("/")
        cand = dataset.candidates[key]
        positives = dataset.outfits_of(split)
        if split not in NEGATIVE_SPLITS or positives.size == 0 or len(cand) % positives.size:
            continue
        block = len(cand) // positives.size
        labels, users = cand.label.reshape(-1, block), cand.user.reshape(-1, block)
        if not (np.array_equal(cand.items[::block], dataset.outfit_items[positives])
                and (labels[:, 0] == 1).all() and not labels[:, 1:].any()
                and (users == dataset.outfit_user[positives][:, None]).all()):
            continue   # not one block per positive: 00_data redraws it
        for r in np.flatnonzero(cand.label == 0):
            rows.append((user_ids[cand.user[r]], split, protocol, outfit_text(cand.items[r])))
    if rows:
        with open(root / NEGATIVES_FILE, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(NEGATIVES_COLUMNS)
            out.writerows(rows)
    return root
