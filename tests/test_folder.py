"""Tests for the outfit-folder reader (fndkit.data.folder) on small folders written on the fly.

Every fixture image has two halves of colours unique to its item, and a size of its own (some not
square), so a mix-up of rows, files or orientation shows up when the decoded images are compared
with what the fixture wrote.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fndkit.data.folder import is_outfit_folder, read_outfit_folder, write_outfit_folder
from fndkit.data.sampling import attach_candidates
from fndkit.data.schema import (FIXED_LAYOUT, SPLITS, VARIABLE_LAYOUT, DatasetError,
                                OutfitDataset)

S = 16   # image_size the tests read at

# item id, category, image path (relative to the folder), (width, height)
ITEMS = [
    ("t1", "top", "images/t1.png", (24, 20)),
    ("t2", "top", "images/t2.jpg", (20, 20)),
    ("t3", "top", "img/tops/t3.png", (16, 16)),
    ("b1", "bottom", "images/b1.png", (20, 28)),
    ("b2", "bottom", "images/b2.jpg", (18, 18)),
    ("b3", "bottom", "images/b3.png", (32, 32)),
    ("s1", "shoe", "images/s1.png", (22, 20)),
    ("s2", "shoe", "images/s2.png", (16, 16)),
    ("s3", "shoe", "images/s3.png", (40, 30)),
]
# Data rows of outfits.csv; the file line of row r is r + 2. Items written in any order.
OUTFITS = [
    ("bob", "train", "t1 b1 s1"),          # line 2
    ("alice", "train", "s2 b2 t2"),        # line 3: shuffled, the reader sorts into slots
    ("bob", "train", "t2 t1 b2 s2"),       # line 4: two tops (t2 first) -> variable size
    ("alice", "val", "t1 b1 s2"),          # line 5: alice's 1st val -> val_teacher
    ("bob", "val", "t3 b1 s1"),            # line 6: bob's only val -> val_teacher
    ("alice", "val", "t3 b2 s1"),          # line 7: alice's 2nd val -> val_teacher
    ("alice", "val", "t2 b1 s1"),          # line 8: alice's 3rd val -> val_student
    ("bob", "test", "t3 b3 s3"),           # line 9
    ("alice", "test", "t1 b1 s1"),         # line 10
    ("dave", "train", "t1 b2 s1"),         # line 11
    ("dave", "test", "t2 b1 s2"),          # line 12
    ("carol", "cold", "t3 b1 s2"),         # line 13
    ("carol", "cold", "s1 b2 t1"),         # line 14
]
# negatives.csv: test/random 2 per test outfit (bob, alice, dave), val/random 1 per val outfit.
NEGATIVES = [
    ("bob", "test", "random", "t1 b2 s1"),       # line 2
    ("bob", "test", "random", "t2 b1 s2"),       # line 3
    ("alice", "test", "random", "t3 b2 s2"),     # line 4
    ("alice", "test", "random", "t2 t3 b3 s1"),  # line 5
    ("dave", "test", "random", "t3 b3 s3"),      # line 6
    ("dave", "test", "random", "t1 b3 s2"),      # line 7
    ("alice", "val", "random", "t2 b3 s3"),      # line 8
    ("bob", "val", "random", "t1 b3 s2"),        # line 9
    ("alice", "val", "random", "t1 b2 s3"),      # line 10
    ("alice", "val", "random", "t3 b3 s2"),      # line 11
]
USERS = ["alice", "bob", "dave", "carol"]   # canonical order: trained users by name, then cold
TOL = 12  # JPEG shifts a colour by a few levels; item colours are much further apart


def colours(k: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Left-half and right-half colour of item k, distinct for every item."""
    return ((30 + 25 * k, 200 - 20 * k, 60), (220 - 22 * k, 40 + 9 * k, 150 + 10 * k))


def item_pixels(k: int) -> np.ndarray:
    w, h = ITEMS[k][3]
    left, right = colours(k)
    pixels = np.empty((h, w, 3), dtype=np.uint8)
    pixels[:, : w // 2], pixels[:, w // 2:] = left, right
    return pixels


def write_csv(path: Path, header: str, rows) -> None:
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))


@dataclass
class Folder:
    root: Path

    @property
    def items(self) -> Path:
        return self.root / "items.csv"

    @property
    def outfits(self) -> Path:
        return self.root / "outfits.csv"

    @property
    def negatives(self) -> Path:
        return self.root / "negatives.csv"

    def edit(self, path: Path, line: int, text: str) -> None:
        """Replace 1-based ``line`` of ``path`` by ``text``."""
        lines = path.read_text().splitlines()
        lines[line - 1] = text
        path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def folder(tmp_path) -> Folder:
    root = tmp_path / "my_outfits"
    for k, (_, _, image, _) in enumerate(ITEMS):
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(item_pixels(k)).save(root / image, quality=95)
    write_csv(root / "items.csv", "item_id,category,image", [i[:3] for i in ITEMS])
    write_csv(root / "outfits.csv", "user,split,items", OUTFITS)
    write_csv(root / "negatives.csv", "user,split,protocol,items", NEGATIVES)
    return Folder(root)


def item_id(word: str) -> int:
    return [i[0] for i in ITEMS].index(word)


def slots(text: str, variable: bool = True) -> list[int]:
    """The canonical slot row of an items field, worked out from the fixture's id prefixes."""
    words = text.split()
    tops = [item_id(w) for w in words if w[0] == "t"]
    rest = [item_id(w) for p in "bs" for w in words if w[0] == p]
    if variable:
        tops = (tops + [-1])[:2]
    return tops + rest


# --------------------------------------------------------------------------------------------
# Round trip


def test_tables_match_what_was_written(folder):
    ds = read_outfit_folder(folder.root, image_size=S)
    assert ds.name == "my_outfits" and ds.meta["source"] == "folder"
    assert ds.meta["item_ids"] == [i[0] for i in ITEMS]
    assert ds.item_category.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # one outfit has two tops, so the layout is Polyvore-519's
    assert ds.slot_categories.tolist() == list(VARIABLE_LAYOUT) and ds.meta["variable_size"]
    np.testing.assert_array_equal(ds.outfit_items, [slots(o[2]) for o in OUTFITS])
    assert ds.outfit_items[2].tolist() == [1, 0, 4, 7]     # t2 then t1: written order of the tops
    assert ds.outfit_items[1].tolist() == [1, -1, 4, 7]    # "s2 b2 t2" sorted into slots
    assert ds.meta["user_ids"] == USERS
    assert ds.outfit_user.tolist() == [USERS.index(o[0]) for o in OUTFITS]
    assert ds.user_pool.tolist() == [0, 0, 0, 1]
    split = [SPLITS[c] for c in ds.outfit_split]
    assert split == ["train", "train", "train", "val_teacher", "val_teacher", "val_teacher",
                     "val_student", "test", "test", "train", "test", "cold", "cold"]
    assert ds.stats()["outfits"] == 11 and ds.stats()["cold_outfits"] == 2


def test_negatives_become_block_candidates(folder):
    ds = read_outfit_folder(folder.root, image_size=S)
    assert sorted(ds.candidates) == ["test/random", "val_student/random", "val_teacher/random"]
    assert ds.meta["negative_ratios"] == {"test/random": 2, "val_teacher/random": 1,
                                          "val_student/random": 1}
    assert ds.meta["negative_ratio"] == 2
    test = ds.candidate_set("test")
    positives = [OUTFITS[r][2] for r in (7, 8, 10)]
    expected = [slots(t) for p, n in zip(positives, np.array(NEGATIVES[:6]).reshape(3, 2, 4))
                for t in [p, *n[:, 3]]]
    np.testing.assert_array_equal(test.items, expected)
    assert test.label.tolist() == [1, 0, 0] * 3
    assert test.user.tolist() == [1, 1, 1, 0, 0, 0, 2, 2, 2]   # bob, alice, dave
    teacher, student = ds.candidate_set("val_teacher"), ds.candidate_set("val_student")
    # val outfits (lines 5..8) with one negative each (lines 8..11); the 4th goes to the student
    np.testing.assert_array_equal(teacher.items, [slots(t) for t in (
        OUTFITS[3][2], NEGATIVES[6][3], OUTFITS[4][2], NEGATIVES[7][3],
        OUTFITS[5][2], NEGATIVES[8][3])])
    np.testing.assert_array_equal(student.items, [slots(OUTFITS[6][2]), slots(NEGATIVES[9][3])])
    assert teacher.user.tolist() == [0, 0, 1, 1, 0, 0] and student.user.tolist() == [0, 0]


def test_without_negatives_the_chain_draws_them(folder):
    folder.negatives.unlink()
    ds = read_outfit_folder(folder.root, image_size=S)
    assert ds.candidates == {} and ds.meta["negative_ratios"] == {}
    # (the fixture's one-outfit val_student split is too small to draw mixtures from)
    attach_candidates(ds, seed=0, ratio=3, splits=("val_teacher", "test"))
    assert sorted(ds.candidates) == ["test/hard", "test/random", "val_teacher/hard",
                                     "val_teacher/random"]
    assert len(ds.candidate_set("test")) == 3 * 4
    ds.validate()


def test_chain_keeps_the_written_negatives_and_draws_the_rest(folder):
    ds = read_outfit_folder(folder.root, image_size=S)
    written = ds.candidate_set("test").items.copy()
    attach_candidates(ds, seed=0, ratio=5, splits=("test",))
    np.testing.assert_array_equal(ds.candidate_set("test").items, written)
    assert len(ds.candidate_set("test", "hard")) == 3 * 6


def expected_image(folder: Folder, k: int) -> np.ndarray:
    """What PIL makes of the written file: decoded, RGB, resized to S x S (LANCZOS)."""
    with Image.open(folder.root / ITEMS[k][2]) as img:
        return np.asarray(img.convert("RGB").resize((S, S), Image.Resampling.LANCZOS))


@pytest.mark.parametrize("store", ["array", "files"])
def test_images_match_the_files_after_resize(folder, store):
    ds = read_outfit_folder(folder.root, image_size=S, image_store=store)
    assert ds.meta["image_store"] == store and ds.image_size == S
    got = ds.images.get(np.arange(len(ITEMS)))
    assert got.shape == (len(ITEMS), S, S, 3) and got.dtype == np.uint8
    for k in range(len(ITEMS)):
        np.testing.assert_array_equal(got[k], expected_image(folder, k))
        # and they are the pictures the fixture drew: left / right halves (JPEG within TOL)
        left, right = colours(k)
        assert np.abs(got[k, :, : S // 2 - 2].mean((0, 1)) - left).max() <= TOL
        assert np.abs(got[k, :, S // 2 + 2:].mean((0, 1)) - right).max() <= TOL


def test_array_and_file_stores_agree_and_survive_save_load(folder, tmp_path):
    by_array = read_outfit_folder(folder.root, image_size=S, image_store="array")
    by_files = read_outfit_folder(folder.root, image_size=S, image_store="files")
    assert by_array.fingerprint() == by_files.fingerprint()
    ids = np.arange(len(ITEMS))
    for ds, where in ((by_array, "a"), (by_files, "f")):
        loaded = OutfitDataset.load(ds.save(tmp_path / where))
        assert loaded.fingerprint() == ds.fingerprint()
        assert loaded.meta["user_ids"] == USERS
        np.testing.assert_array_equal(loaded.images.get(ids), by_array.images.get(ids))
    assert (tmp_path / "a" / "images.npy").is_file() and (tmp_path / "f" / "images.json").is_file()


def test_auto_store_uses_an_array_for_small_sets(folder):
    assert read_outfit_folder(folder.root, image_size=S).meta["image_store"] == "array"


def test_header_columns_in_any_order_with_extras_and_capitals(folder):
    write_csv(folder.items, "Image,Category,Title,Item_ID",
              [(i[2], i[1].upper(), f"title of {i[0]}", i[0]) for i in ITEMS])
    ds = read_outfit_folder(folder.root, image_size=S)
    assert ds.meta["item_ids"] == [i[0] for i in ITEMS]
    assert ds.item_category.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_fixed_layout_when_no_outfit_has_two_tops(folder):
    folder.edit(folder.outfits, 4, "bob,train,t2 b2 s2")
    folder.edit(folder.negatives, 5, "alice,test,random,t2 b3 s1")
    ds = read_outfit_folder(folder.root, image_size=S)
    assert ds.slot_categories.tolist() == list(FIXED_LAYOUT) and not ds.meta["variable_size"]
    np.testing.assert_array_equal(ds.outfit_items[:4], [slots(t, variable=False) for t in
                                                        ("t1 b1 s1", "t2 b2 s2", "t2 b2 s2",
                                                         "t1 b1 s2")])


def test_integer_user_ids_keep_their_numbers(folder):
    rows = [("10" if u == "bob" else "2" if u == "alice" else "0" if u == "dave" else "1", s, i)
            for u, s, i in OUTFITS]
    write_csv(folder.outfits, "user,split,items", rows)
    folder.negatives.unlink()
    ds = read_outfit_folder(folder.root, image_size=S)
    # trained users sorted numerically (0, 2, 10 -- not "10" < "2" as text), then the cold "1"
    assert ds.meta["user_ids"] == ["0", "2", "10", "1"]
    assert ds.outfit_user.tolist() == [{"10": 2, "2": 1, "0": 0, "1": 3}[r[0]] for r in rows]


def test_explicit_validation_halves(folder):
    for line, row in ((5, "alice,val_student,t1 b1 s2"), (6, "bob,val_teacher,t3 b1 s1"),
                      (7, "alice,val_teacher,t3 b2 s1"), (8, "alice,val_teacher,t2 b1 s1")):
        folder.edit(folder.outfits, line, row)
    write_csv(folder.negatives, "user,split,protocol,items",
              [("bob", "val_teacher", "hard", "t2 b3 s3"),
               ("alice", "val_teacher", "hard", "t1 b3 s2"),
               ("alice", "val_teacher", "hard", "t1 b2 s3")])
    ds = read_outfit_folder(folder.root, image_size=S)
    assert [SPLITS[c] for c in ds.outfit_split[3:7]] == ["val_student", "val_teacher",
                                                         "val_teacher", "val_teacher"]
    assert sorted(ds.candidates) == ["val_teacher/hard"]
    assert ds.candidate_set("val_teacher", "hard").user.tolist() == [1, 1, 0, 0, 0, 0]


def test_is_outfit_folder(folder, tmp_path):
    assert is_outfit_folder(folder.root)
    folder.outfits.unlink()
    assert not is_outfit_folder(folder.root) and not is_outfit_folder(tmp_path / "nothing")


@pytest.mark.parametrize("variable", [False, True])
def test_write_then_read_reproduces_a_synthetic_dataset(variable, tmp_path):
    from fndkit.data.synthetic import make_dataset

    ds = make_dataset(scale="tiny", seed=0, variable_size=variable, image_size=S)
    attach_candidates(ds, seed=0, ratio=2)
    back = read_outfit_folder(write_outfit_folder(ds, tmp_path / "out"), image_size=S)
    for name in ("item_category", "outfit_items", "outfit_user", "outfit_split",
                 "slot_categories", "user_pool"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name), err_msg=name)
    assert sorted(back.candidates) == sorted(ds.candidates)
    assert back.fingerprint() == ds.fingerprint()   # tables and candidates alike
    ids = np.arange(ds.n_items)
    np.testing.assert_array_equal(back.images.get(ids), ds.images.get(ids))   # PNG is lossless


def test_write_keeps_the_written_ids(folder, tmp_path):
    ds = read_outfit_folder(folder.root, image_size=S)
    again = read_outfit_folder(write_outfit_folder(ds, tmp_path / "again"), image_size=S)
    assert again.meta["item_ids"] == ds.meta["item_ids"] and again.meta["user_ids"] == USERS
    assert again.fingerprint() == ds.fingerprint()
    with pytest.raises(DatasetError, match="already exists"):
        write_outfit_folder(ds, tmp_path / "again")


# --------------------------------------------------------------------------------------------
# Bad input: every error names the file and the line (where there is one) and says what to do


def garbage_image(f: Folder) -> None:
    (f.root / "images/t2.jpg").write_bytes(b"this is not a JPEG")


def truncated_png(f: Folder) -> None:
    path = f.root / "images/b3.png"
    path.write_bytes(path.read_bytes()[:60])


def append(path_of, text):
    def edit(f: Folder) -> None:
        path = path_of(f)
        path.write_text(path.read_text() + text + "\n")
    return edit


def line(path_of, number, text):
    return lambda f: f.edit(path_of(f), number, text)


def items(f):
    return f.items


def outfits(f):
    return f.outfits


def negatives(f):
    return f.negatives


def both(*edits):
    def edit(f: Folder) -> None:
        for e in edits:
            e(f)
    return edit


BAD = {
    # items.csv
    "items missing": (lambda f: f.items.unlink(), "items.csv", None,
                      r"missing file .*items\.csv; an outfit folder holds items\.csv and "
                      r"outfits\.csv"),
    "items empty": (lambda f: f.items.write_text(""), "items.csv", 1,
                    r"empty file or empty header; the first line must be the header "
                    r"item_id,category,image"),
    "items header": (line(items, 1, "item_id,category,picture"), "items.csv", 1,
                     r"bad header 'item_id,category,picture': no column 'image'; expected "
                     r"'item_id,category,image'"),
    "items header twice": (line(items, 1, "item_id,category,image,category"), "items.csv", 1,
                           r"column 'category' appears twice"),
    "items only header": (lambda f: write_csv(f.items, "item_id,category,image", []), "items.csv",
                          None, r"no items \(only a header\)"),
    "unknown category": (line(items, 3, "t2,hat,images/t2.jpg"), "items.csv", 3,
                         r"unknown category 'hat' of item 't2'; valid: top, bottom, shoe"),
    "duplicate item": (line(items, 4, "t1,top,img/tops/t3.png"), "items.csv", 4,
                       r"item id 't1' is already used on line 2; item ids must be unique"),
    "item id with space": (line(items, 4, "t 3,top,img/tops/t3.png"), "items.csv", 4,
                           r"item id 't 3' is empty or holds whitespace"),
    "empty item id": (line(items, 4, ",top,img/tops/t3.png"), "items.csv", 4,
                      r"item id '' is empty or holds whitespace"),
    "no image path": (line(items, 5, "b1,bottom,"), "items.csv", 5,
                      r"item 'b1' has no image path"),
    "too few fields": (line(items, 3, "t2,top"), "items.csv", 3,
                       r"2 fields, expected 3 \(item_id,category,image\): 't2,top'"),
    "image missing": (lambda f: (f.root / "images/s2.png").unlink(), "items.csv", 9,
                      r"the image 'images/s2.png' of item 's2' does not exist"),
    "image garbage": (garbage_image, "items.csv", 3,
                      r"the image 'images/t2.jpg' of item 't2' cannot be read "
                      r"\(UnidentifiedImageError.*\); replace the file or drop the item"),
    "image truncated": (truncated_png, "items.csv", 7,
                        r"the image 'images/b3.png' of item 'b3' cannot be read"),
    "items not utf-8": (lambda f: f.items.write_bytes(f.items.read_bytes().replace(
        b"t3,top", b"t\xe93,top")), "items.csv", 4, r"not UTF-8 text .*save the file as UTF-8"),
    # outfits.csv
    "outfits missing": (lambda f: f.outfits.unlink(), "outfits.csv", None, r"missing file"),
    "outfits header": (line(outfits, 1, "user,split,outfit"), "outfits.csv", 1,
                       r"no column 'items'; expected 'user,split,items'"),
    "outfits only header": (lambda f: write_csv(f.outfits, "user,split,items", []), "outfits.csv",
                            None, r"no outfits \(only a header\)"),
    "unknown split": (line(outfits, 6, "bob,validation,t3 b1 s1"), "outfits.csv", 6,
                      r"unknown split 'validation'; valid: train, val, val_teacher, val_student, "
                      r"test, cold"),
    "empty outfit": (line(outfits, 7, "alice,val,"), "outfits.csv", 7,
                     r"empty outfit \(the items field lists no item ids\)"),
    "unknown item": (line(outfits, 9, "bob,test,t3 b9 s3"), "outfits.csv", 9,
                     r"item 'b9' is not in .*items\.csv; add it there or correct the id"),
    "item twice": (line(outfits, 2, "bob,train,t1 b1 t1 s1"), "outfits.csv", 2,
                   r"item 't1' appears twice in the outfit"),
    "two bottoms": (line(outfits, 3, "alice,train,t2 b2 b1 s2"), "outfits.csv", 3,
                    r"the outfit has 1 top, 2 bottoms, 1 shoe; an outfit needs one or two tops, "
                    r"one bottom and one shoe"),
    "three tops": (line(outfits, 3, "alice,train,t1 t2 t3 b2 s2"), "outfits.csv", 3,
                   r"has 3 tops, 1 bottom, 1 shoe"),
    "no shoe": (line(outfits, 11, "dave,train,t1 b2"), "outfits.csv", 11,
                r"has 1 top, 1 bottom, 0 shoes"),
    "empty user": (line(outfits, 12, ",test,t2 b1 s2"), "outfits.csv", 12, r"empty user"),
    "cold and trained": (line(outfits, 14, "carol,train,s1 b2 t1"), "outfits.csv", 14,
                         r"user 'carol' has a train outfit here but a cold outfit on line 13"),
    "no train outfit": (line(outfits, 11, "dave,val,t1 b2 s1"), "outfits.csv", 11,
                        r"user 'dave' has no 'train' outfit"),
    "val and halves": (line(outfits, 8, "alice,val_student,t2 b1 s1"), "outfits.csv", 8,
                       r"split 'val_student' here, but line 5 uses 'val'"),
    "blank lines count": (both(lambda f: f.outfits.write_text(
        f.outfits.read_text().replace("\nbob,val,", "\n\n\nbob,val,")),
        line(outfits, 11, "bob,test,t3 b3 x3")), "outfits.csv", 11, r"item 'x3' is not in"),
    # negatives.csv
    "negatives header": (line(negatives, 1, "user,split,items"), "negatives.csv", 1,
                         r"no column 'protocol'"),
    "train negatives": (line(negatives, 3, "bob,train,random,t2 b1 s2"), "negatives.csv", 3,
                        r"split 'train' cannot have fixed negatives; valid: val, val_teacher, "
                        r"val_student, test \(training negatives are redrawn every epoch"),
    "unknown protocol": (line(negatives, 4, "alice,test,easy,t3 b2 s2"), "negatives.csv", 4,
                         r"unknown protocol 'easy'; valid: random, hard"),
    "negative of another user": (line(negatives, 4, "dave,test,random,t3 b2 s2"), "negatives.csv",
                                 4, r"negative of user 'dave', but as test/random negative 3 it "
                                    r"belongs to test outfit 2 \(outfits\.csv line 10\), posted "
                                    r"by 'alice'; write 2 negatives per test outfit"),
    "negative count": (line(negatives, 7, "alice,val,random,t1 b2 s3"), "negatives.csv", 2,
                       r"the test/random negatives \(lines 2\.\.6\) number 5, not a multiple of "
                       r"the 3 'test' outfits in outfits\.csv"),
    "negatives for absent split": (append(negatives, "bob,val_teacher,random,t1 b2 s2"),
                                   "negatives.csv", 12, r"number 1, not a multiple of the 0 "
                                                        r"'val_teacher' outfits"),
    "negative unknown item": (line(negatives, 9, "bob,val,random,t1 b3 s7"), "negatives.csv", 9,
                              r"item 's7' is not in"),
    "negative with no bottom": (line(negatives, 9, "bob,val,random,t1 s2"), "negatives.csv", 9,
                                r"has 1 top, 0 bottoms, 1 shoe"),
    "two tops in a fixed dataset": (line(outfits, 4, "bob,train,t2 b2 s2"), "negatives.csv", 5,
                                    r"has 2 tops, 1 bottom, 1 shoe; an outfit needs one top "
                                    r"\(no outfit in outfits\.csv has two, so the dataset is "
                                    r"fixed-size\)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_file_and_line(folder, case):
    edit, file, line_no, message = BAD[case]
    edit(folder)
    with pytest.raises(DatasetError) as info:
        read_outfit_folder(folder.root, image_size=S)
    text = str(info.value)
    assert str(folder.root / file) in text
    if line_no is None:
        assert ", line " not in text
    else:
        assert f"{folder.root / file}, line {line_no}: " in text
    assert re.search(message, text), text


def test_files_store_checks_images_up_front_unless_told_not_to(folder):
    garbage_image(folder)
    with pytest.raises(DatasetError, match=r"items\.csv, line 3: the image 'images/t2\.jpg'"):
        read_outfit_folder(folder.root, image_size=S, image_store="files")
    ds = read_outfit_folder(folder.root, image_size=S, image_store="files", check_images=False)
    ds.images.get(np.array([0]))
    with pytest.raises(DatasetError, match=r"cannot decode the image of item 1"):
        ds.images.get(np.array([1]))
    (folder.root / "images/t2.jpg").unlink()   # existence is checked all the same
    with pytest.raises(DatasetError, match=r"line 3: .* does not exist"):
        read_outfit_folder(folder.root, image_size=S, image_store="files", check_images=False)


@pytest.mark.parametrize("kwargs,match", [
    ({"image_size": 0}, r"image_size=.* must be an integer >= 1"),
    ({"image_size": 16.0}, r"image_size=.* must be an integer >= 1"),
    ({"image_store": "lazy"}, r"unknown image_store 'lazy'; valid: auto, array, files"),
])
def test_bad_arguments(folder, kwargs, match):
    with pytest.raises(DatasetError, match=match):
        read_outfit_folder(folder.root, **{"image_size": S, **kwargs})


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"outfit folder .*nowhere does not exist"):
        read_outfit_folder(tmp_path / "nowhere")


def test_a_copied_folder_reads_the_same(folder, tmp_path):
    """Nothing depends on where the folder lives (array store)."""
    first = read_outfit_folder(folder.root, image_size=S)
    shutil.copytree(folder.root, tmp_path / "copy")
    second = read_outfit_folder(tmp_path / "copy", image_size=S, name="my_outfits")
    assert second.fingerprint() == first.fingerprint() and second.name == first.name
