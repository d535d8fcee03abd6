"""Tests for the Polyvore-U reader (fndkit.data.polyvore) on tiny release-layout fixtures.

Every fixture image is a solid 8x8 JPEG of a colour unique to its file, so any mix-up of list
offsets or local indices shows up as a wrong colour when the decoded images are compared with what
the fixture wrote.
"""

from __future__ import annotations

import pickle
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fndkit.data.polyvore import FileImages, read_polyvore_u
from fndkit.data.schema import (CATEGORIES, FIXED_LAYOUT, SPLITS, VARIABLE_LAYOUT, DatasetError,
                                OutfitDataset)

TOL = 10  # JPEG shifts a solid colour by a few levels; palette colours are 40 apart


def palette(k: int) -> tuple[int, int, int]:
    return (20 + 40 * (k % 6), 20 + 40 * (k // 6 % 6), 20 + 40 * (k // 36 % 6))


@dataclass
class SubsetFixture:
    name: str
    variable: bool
    lists: list[list[str]]                               # entries as written in image_list_*
    tables: dict[str, np.ndarray] = field(default_factory=dict)  # file stem -> rows
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def layout(self):
        return VARIABLE_LAYOUT if self.variable else FIXED_LAYOUT

    @property
    def header(self) -> str:
        return "user,top,top,bottom,shoe" if self.variable else "user,top,bottom,shoe"


@dataclass
class Release:
    root: Path
    colour_of: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # file name -> colour
    subsets: dict[str, SubsetFixture] = field(default_factory=dict)

    @property
    def image_dir(self) -> Path:
        return self.root / "images" / "291x291"

    def expected_colours(self, sub: SubsetFixture, rows: np.ndarray) -> np.ndarray:
        """[N, S, 3] colours the fixture wrote for each slot of ``rows`` (-1 slots: -1)."""
        out = np.full((len(rows), len(sub.layout), 3), -1)
        for r, row in enumerate(rows):
            for s, cat in enumerate(sub.layout):
                if row[s + 1] >= 0:
                    name = sub.lists[cat][row[s + 1]]
                    out[r, s] = self.colour_of[name if name.endswith(".jpg") else name + ".jpg"]
        return out


def write_csv(path: Path, header: str, rows: np.ndarray) -> None:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def write_subset(release: Release, name: str, *, variable: bool, n_items: tuple[int, int, int],
                 users: dict[str, list[int]], ratio: int = 3, hard_ratio: int = 2,
                 jpg_suffix: bool = True, csv_ext: str = "", seed: int = 0,
                 image_px: int = 8) -> SubsetFixture:
    """A tuples_<name> folder; ``users[split]`` lists the user of each positive row in order.
    Images are solid ``image_px``-pixel squares (the release's are 291 px)."""
    rng = np.random.default_rng(seed)
    folder = release.root / f"tuples_{name}"
    folder.mkdir(parents=True)
    release.image_dir.mkdir(parents=True, exist_ok=True)
    lists = []
    for cat, n in zip(CATEGORIES, n_items):
        entries = []
        for i in range(n):
            file = f"{name}-{cat}-{i}.jpg"
            colour = palette(len(release.colour_of))
            Image.new("RGB", (image_px, image_px), colour).save(release.image_dir / file, quality=95)
            release.colour_of[file] = colour
            entries.append(file if jpg_suffix else file[:-4])
        (folder / f"image_list_{cat}").write_text("\n".join(entries) + "\n")
        lists.append(entries)
    sub = SubsetFixture(name, variable, lists)

    def outfits(user_col: np.ndarray) -> np.ndarray:
        cols = [rng.integers(0, n_items[c], len(user_col)) for c in sub.layout]
        if variable:
            cols[1] = np.where(rng.random(len(user_col)) < 0.4, -1, cols[1])
            cols[1][0] = -1   # every file has at least one single-top outfit
        return np.column_stack([user_col] + cols).astype(np.int64)

    for split, split_users in users.items():
        posi = outfits(np.asarray(split_users))
        files = {f"tuples_{split}_posi": posi,
                 f"tuples_{split}_nega": outfits(np.repeat(posi[:, 0], ratio)),
                 f"tuples_{split}_nega_hard": outfits(np.repeat(posi[:, 0], hard_ratio))}
        for stem, rows in files.items():
            sub.tables[stem] = rows
            sub.paths[stem] = folder / f"{stem}{csv_ext}"
            write_csv(sub.paths[stem], sub.header, rows)
    release.subsets[name] = sub
    return sub


MAIN_USERS = {"train": [0, 1, 2, 0, 1, 2, 0, 1],
              "val": [1, 0, 0, 2, 1, 0, 1],     # user 0: 3 rows, user 1: 3 rows, user 2: 1 row
              "test": [0, 1, 2, 2]}
COLD_USERS = {"train": [0, 1, 0], "val": [1], "test": [0, 1]}


@pytest.fixture
def fixed_release(tmp_path) -> Release:
    release = Release(tmp_path / "polyvore")
    write_subset(release, "630", variable=False, n_items=(5, 4, 3), users=MAIN_USERS, seed=1)
    write_subset(release, "53", variable=False, n_items=(3, 3, 2), users=COLD_USERS, ratio=2,
                 csv_ext=".csv", seed=2)
    return release


@pytest.fixture
def variable_release(tmp_path) -> Release:
    release = Release(tmp_path / "polyvore")
    write_subset(release, "519", variable=True, n_items=(4, 3, 3), users=MAIN_USERS,
                 jpg_suffix=False, seed=3)
    write_subset(release, "32", variable=True, n_items=(3, 2, 2), users=COLD_USERS, ratio=2,
                 jpg_suffix=False, seed=4)
    return release


def decoded_colours(ds: OutfitDataset, items: np.ndarray) -> np.ndarray:
    """Mean colour of each item's decoded image, [..., 3]; -1 where the slot is absent."""
    out = np.full(items.shape + (3,), -1.0)
    present = items >= 0
    out[present] = ds.images.get(items[present]).reshape(-1, ds.image_size ** 2, 3).mean(1)
    return out


def assert_colours(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(actual < 0, expected < 0)
    assert np.abs(actual - expected).max() <= TOL


# --------------------------------------------------------------------------------------------
# Mapping


def test_fixed_counts_categories_and_layout(fixed_release):
    ds = read_polyvore_u(fixed_release.root, subset=630, image_size=8, cold_subset="53")
    assert ds.name == "polyvore-630"
    assert ds.n_items == 12 + 8
    expected_cats = [0] * 5 + [1] * 4 + [2] * 3 + [0] * 3 + [1] * 3 + [2] * 2
    np.testing.assert_array_equal(ds.item_category, expected_cats)
    np.testing.assert_array_equal(ds.slot_categories, FIXED_LAYOUT)
    assert not ds.variable_size
    np.testing.assert_array_equal(ds.user_pool, [0, 0, 0, 1, 1])
    assert ds.n_outfits == 8 + 7 + 4 + 3 + 1 + 2
    assert ds.stats()["outfits_train"] == 8 and ds.stats()["outfits_test"] == 4
    assert ds.stats()["outfits_cold"] == 6
    assert ds.meta == {"source": "polyvore-u", "root": str(fixed_release.root), "subset": "630",
                       "cold_subset": "53", "image_size": 8, "image_layout": "files",
                       "negative_ratio": 3,
                       "negative_ratios": {"train/random": 3, "val/random": 3, "test/random": 3,
                                           "train/hard": 2, "val/hard": 2, "test/hard": 2,
                                           "cold/train/random": 2, "cold/val/random": 2,
                                           "cold/test/random": 2, "cold/train/hard": 2,
                                           "cold/val/hard": 2, "cold/test/hard": 2},
                       "cold_outfit_ranges": {"train": [19, 22], "val": [22, 23],
                                              "test": [23, 25]}}


def test_without_cold_subset_has_no_cold_pool(fixed_release):
    ds = read_polyvore_u(fixed_release.root, "630", image_size=8)
    assert ds.n_items == 12 and ds.n_users == 3 and ds.n_outfits == 19
    assert not ds.split_mask("cold").any()
    assert not any(key.startswith("cold/") for key in ds.candidates)


def test_item_table_images_are_the_listed_files_in_order(fixed_release):
    ds = read_polyvore_u(fixed_release.root, "630", image_size=8, cold_subset="53")
    names = [n for s in ("630", "53") for lst in fixed_release.subsets[s].lists for n in lst]
    expected = np.array([fixed_release.colour_of[n] for n in names], dtype=float)
    assert_colours(decoded_colours(ds, np.arange(ds.n_items)), expected)


@pytest.mark.parametrize("kind", ["fixed", "variable"])
def test_outfits_map_local_indices_to_global_items(kind, fixed_release, variable_release):
    release = fixed_release if kind == "fixed" else variable_release
    main, cold = ("630", "53") if kind == "fixed" else ("519", "32")
    ds = read_polyvore_u(release.root, main, image_size=8, cold_subset=cold)
    rows = np.concatenate([release.subsets[main].tables[f"tuples_{s}_posi"]
                           for s in ("train", "val", "test")])
    cold_rows = np.concatenate([release.subsets[cold].tables[f"tuples_{s}_posi"]
                                for s in ("train", "val", "test")])
    n_main = len(rows)
    assert_colours(decoded_colours(ds, ds.outfit_items[:n_main]),
                   release.expected_colours(release.subsets[main], rows))
    assert_colours(decoded_colours(ds, ds.outfit_items[n_main:]),
                   release.expected_colours(release.subsets[cold], cold_rows))
    np.testing.assert_array_equal(ds.outfit_user[:n_main], rows[:, 0])
    np.testing.assert_array_equal(ds.outfit_user[n_main:], cold_rows[:, 0] + 3)
    assert (ds.outfit_split[n_main:] == SPLITS.index("cold")).all()
    if kind == "variable":
        np.testing.assert_array_equal(ds.slot_categories, VARIABLE_LAYOUT)
        assert ds.variable_size
        np.testing.assert_array_equal(ds.outfit_items[:n_main, 1] == -1, rows[:, 2] == -1)
        assert ds.item_category[ds.outfit_items[ds.outfit_items[:, 1] >= 0, 1]].max() == 0


def test_val_positives_halved_per_user_in_file_order(fixed_release):
    ds = read_polyvore_u(fixed_release.root, "630", image_size=8)
    val_users = MAIN_USERS["val"]
    val_splits = ds.outfit_split[8:8 + len(val_users)]
    # Reference: walk the file, the first ceil(n_u / 2) rows of each user go to the teacher.
    n_of = {u: val_users.count(u) for u in set(val_users)}
    seen: dict[int, int] = {}
    expected = []
    for u in val_users:
        seen[u] = seen.get(u, 0) + 1
        expected.append("val_teacher" if seen[u] <= (n_of[u] + 1) // 2 else "val_student")
    assert [SPLITS[s] for s in val_splits] == expected
    assert expected.count("val_teacher") == 2 + 2 + 1


def reference_candidates(release, sub, posi_rows, nega_rows, ratio, keep):
    """Naive loop: per kept positive i, the positive then nega rows i*ratio .. i*ratio+ratio-1."""
    users, colours, labels = [], [], []
    for i, row in enumerate(posi_rows):
        if not keep[i]:
            continue
        block = [(row, 1)] + [(nega_rows[j], 0) for j in range(i * ratio, i * ratio + ratio)]
        for outfit, label in block:
            users.append(row[0])
            colours.append(release.expected_colours(sub, outfit[None])[0])
            labels.append(label)
    return np.array(users), np.array(colours), np.array(labels)


@pytest.mark.parametrize("protocol,file_suffix,ratio", [("random", "nega", 3),
                                                        ("hard", "nega_hard", 2)])
@pytest.mark.parametrize("kind", ["fixed", "variable"])
def test_candidates_follow_the_released_alignment(kind, protocol, file_suffix, ratio,
                                                  fixed_release, variable_release):
    release = fixed_release if kind == "fixed" else variable_release
    main = "630" if kind == "fixed" else "519"
    sub = release.subsets[main]
    ds = read_polyvore_u(release.root, main, image_size=8)
    val_split = np.array([SPLITS[s] for s in ds.outfit_split[8:15]])
    cases = {"val_teacher": ("val", val_split == "val_teacher"),
             "val_student": ("val", val_split == "val_student"),
             "test": ("test", np.ones(4, dtype=bool))}
    for split, (file_split, keep) in cases.items():
        cand = ds.candidate_set(split, protocol)
        users, colours, labels = reference_candidates(
            release, sub, sub.tables[f"tuples_{file_split}_posi"],
            sub.tables[f"tuples_{file_split}_{file_suffix}"], ratio, keep)
        np.testing.assert_array_equal(cand.user, users)
        np.testing.assert_array_equal(cand.label, labels)
        assert_colours(decoded_colours(ds, cand.items), colours.astype(float))
        assert len(cand) == keep.sum() * (1 + ratio)
    assert "train/random" not in ds.candidates and "train/hard" not in ds.candidates


def test_cold_candidates_come_from_the_cold_test_files(fixed_release):
    ds = read_polyvore_u(fixed_release.root, "630", image_size=8, cold_subset=53)
    sub = fixed_release.subsets["53"]
    cand = ds.candidate_set("cold", "random")
    posi = sub.tables["tuples_test_posi"]
    users, colours, labels = reference_candidates(fixed_release, sub, posi,
                                                  sub.tables["tuples_test_nega"], 2,
                                                  np.ones(len(posi), dtype=bool))
    np.testing.assert_array_equal(cand.user, users + 3)
    np.testing.assert_array_equal(cand.label, labels)
    assert_colours(decoded_colours(ds, cand.items), colours.astype(float))
    start, stop = ds.meta["cold_outfit_ranges"]["test"]
    np.testing.assert_array_equal(ds.outfit_items[start:stop], cand.items[::3])
    assert (cand.label[::3] == 1).all()


def test_missing_hard_files_give_no_hard_candidates(fixed_release):
    sub = fixed_release.subsets["630"]
    sub.paths["tuples_val_nega_hard"].unlink()
    sub.paths["tuples_train_nega"].unlink()   # training negatives are optional too
    ds = read_polyvore_u(fixed_release.root, "630", image_size=8)
    assert "val_teacher/hard" not in ds.candidates and "val_student/hard" not in ds.candidates
    assert "test/hard" in ds.candidates and "val_teacher/random" in ds.candidates


# --------------------------------------------------------------------------------------------
# Images, persistence


def test_validate_and_save_load_round_trip(fixed_release, tmp_path):
    ds = read_polyvore_u(fixed_release.root, "630", image_size=8, cold_subset="53")
    ds.validate()
    ds.save(tmp_path / "run" / "data")
    back = OutfitDataset.load(tmp_path / "run" / "data")
    assert isinstance(back.images, FileImages)
    assert back.fingerprint() == ds.fingerprint()
    assert back.meta == ds.meta and back.name == ds.name
    assert sorted(back.candidates) == sorted(ds.candidates)
    ids = np.arange(ds.n_items)
    np.testing.assert_array_equal(back.images.get(ids), ds.images.get(ids))


def test_images_decode_lazily_and_resize(fixed_release):
    ds = read_polyvore_u(fixed_release.root, "630", image_size=16)
    assert ds.images._cache == {} and ds.image_size == 16
    batch = ds.images.get(np.array([[0, 5], [11, 0]]))
    assert batch.shape == (2, 2, 16, 16, 3) and batch.dtype == np.uint8
    assert len(ds.images._cache) == 3
    np.testing.assert_array_equal(batch[0, 0], batch[1, 1])
    with pytest.raises(DatasetError, match="item id -1 is outside 0..11"):
        ds.images.get(np.array([0, -1]))
    # A larger two-colour image: resizing keeps the left half red and the right half blue.
    half = np.zeros((64, 64, 3), np.uint8)
    half[:, :32] = (200, 20, 20)
    half[:, 32:] = (20, 20, 200)
    Image.fromarray(half).save(fixed_release.image_dir / "630-top-0.jpg", quality=95)
    small = FileImages(fixed_release.image_dir, ["630-top-0.jpg"], image_size=4).get([0])[0]
    assert small.shape == (4, 4, 3)
    assert np.abs(small[:, 0].astype(int) - (200, 20, 20)).max() <= 20
    assert np.abs(small[:, 3].astype(int) - (20, 20, 200)).max() <= 20


def test_file_images_describe_and_pickle(fixed_release):
    ds = read_polyvore_u(fixed_release.root, "630", image_size=8)
    desc = ds.images.describe()
    assert desc["kind"] == "files" and desc["image_size"] == 8
    assert desc["root"] == str(fixed_release.image_dir)
    assert desc["names"][:2] == ["630-top-0.jpg", "630-top-1.jpg"]
    ds.images.get([0, 1])
    clone = pickle.loads(pickle.dumps(ds.images))
    assert clone._cache == {} and len(clone) == len(ds.images)
    np.testing.assert_array_equal(clone.get([0, 1]), ds.images.get([0, 1]))
    rebuilt = FileImages.from_description(desc)
    np.testing.assert_array_equal(rebuilt.get([3]), ds.images.get([3]))


def write_lmdb(release: Release, skip: str | None = None) -> Path:
    import lmdb

    path = release.root / "images" / "lmdb"
    env = lmdb.open(str(path), map_size=2 ** 24)
    with env.begin(write=True) as txn:
        for file in sorted(release.colour_of):
            if file != skip:
                txn.put(file.encode(), (release.image_dir / file).read_bytes())
    env.close()
    shutil.rmtree(release.image_dir)
    return path


@pytest.mark.parametrize("kind", ["fixed", "variable"])
def test_lmdb_layout(kind, fixed_release, variable_release, tmp_path):
    release = fixed_release if kind == "fixed" else variable_release
    main, cold = ("630", "53") if kind == "fixed" else ("519", "32")
    names = [n for s in (main, cold) for lst in release.subsets[s].lists for n in lst]
    expected = np.array([release.colour_of[n if n.endswith(".jpg") else n + ".jpg"]
                         for n in names], dtype=float)
    lmdb_path = write_lmdb(release)
    ds = read_polyvore_u(release.root, main, image_size=8, cold_subset=cold)
    assert ds.meta["image_layout"] == "lmdb" and ds.images.describe()["root"] == str(lmdb_path)
    assert_colours(decoded_colours(ds, np.arange(ds.n_items)), expected)
    ds.save(tmp_path / "saved")
    back = OutfitDataset.load(tmp_path / "saved")
    np.testing.assert_array_equal(back.images.get([0, 4]), ds.images.get([0, 4]))


def test_lmdb_missing_key_fails_when_read(fixed_release):
    write_lmdb(fixed_release, skip="630-bottom-1.jpg")
    ds = read_polyvore_u(fixed_release.root, "630", image_size=8)   # keys are checked lazily
    ds.images.get([0, 5])
    with pytest.raises(DatasetError, match=r"no image for item 6 .*'630-bottom-1.jpg'"):
        ds.images.get([6])


# --------------------------------------------------------------------------------------------
# Errors


def read_expecting(release, match, **kwargs):
    kwargs = {"subset": "630", "image_size": 8, **kwargs}
    with pytest.raises(DatasetError, match=match):
        read_polyvore_u(release.root, **kwargs)


def test_unknown_subset_names_value_and_choices(fixed_release):
    read_expecting(fixed_release, r"subset '999'; valid choices: 630, 519, 53, 32", subset="999")
    read_expecting(fixed_release, r"cold_subset 7; valid choices", cold_subset=7)
    read_expecting(fixed_release, r"cold_subset '630' equals subset", cold_subset="630")


def test_missing_folder_and_files(fixed_release):
    read_expecting(fixed_release, re.escape(str(fixed_release.root / "tuples_519")),
                   subset="519")
    sub = fixed_release.subsets["630"]
    sub.paths["tuples_test_nega"].unlink()
    read_expecting(fixed_release, r"missing file tuples_test_nega or tuples_test_nega\.csv")
    (fixed_release.root / "tuples_630" / "image_list_shoe").unlink()
    read_expecting(fixed_release, r"missing file image_list_shoe")
    shutil.rmtree(fixed_release.root / "images")
    read_expecting(fixed_release, r"missing folder .*images")


def test_missing_image_files_are_counted_up_front(fixed_release):
    (fixed_release.image_dir / "630-bottom-2.jpg").unlink()
    (fixed_release.image_dir / "53-shoe-0.jpg").unlink()
    read_expecting(fixed_release, r"2 of 20 image files are missing .*first: 630-bottom-2\.jpg "
                                  r"\(item 7, line 3 of .*image_list_bottom\)", cold_subset="53")


def edit_line(path: Path, line_no: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_bad_header_shows_found_and_expected(fixed_release):
    path = fixed_release.subsets["630"].paths["tuples_train_posi"]
    edit_line(path, 1, "user,top,bottom,shoes")
    read_expecting(fixed_release, r"tuples_train_posi, line 1: bad header 'user,top,bottom,shoes'; "
                                  r"expected 'user,top,bottom,shoe'")


def test_header_must_match_the_folder_layout(fixed_release):
    path = fixed_release.subsets["630"].paths["tuples_test_nega_hard"]
    edit_line(path, 1, "user,top,top,bottom,shoe")
    read_expecting(fixed_release, r"tuples_test_nega_hard, line 1: header 'user,top,top,bottom,"
                                  r"shoe' does not match .* expected 'user,top,bottom,shoe'")


def test_cold_subset_must_share_the_layout(fixed_release):
    write_subset(fixed_release, "32", variable=True, n_items=(2, 2, 2), users=COLD_USERS)
    read_expecting(fixed_release, r"tuples_32 has layout .* pair fixed with fixed",
                   cold_subset="32")


@pytest.mark.parametrize("line_text,match", [
    ("0,1,2", r"line 4: 3 fields, expected 4 \(user,top,bottom,shoe\)"),
    ("0,1,2,1,0", r"line 4: 5 fields, expected 4"),
    ("0,x,2,1", r"line 4: field 2 \(top\) is 'x', not an integer"),
    ("0,1,2.5,1", r"line 4: field 3 \(bottom\) is '2.5', not an integer"),
    ("0,1,9,1", r"line 4: bottom index 9 \(column 3\) is out of range for image_list_bottom "
                r"\(4 items, valid 0..3\)"),
    ("0,5,0,1", r"line 4: top index 5 .*image_list_top \(5 items"),
    ("0,1,0,-1", r"line 4: -1 \(absent\) in column 4 \(shoe\); only the second top"),
    ("-2,1,0,1", r"line 4: user id -2 is negative"),
])
def test_bad_rows_name_file_and_line(fixed_release, line_text, match):
    path = fixed_release.subsets["630"].paths["tuples_val_posi"]
    edit_line(path, 4, line_text)
    read_expecting(fixed_release, re.escape(str(path)) + ", " + match)


def test_bad_rows_in_negative_and_cold_files_are_caught(fixed_release):
    cold = fixed_release.subsets["53"]
    edit_line(cold.paths["tuples_train_nega"], 3, "1,0,7,0")
    read_expecting(fixed_release, r"tuples_train_nega\.csv, line 3: bottom index 7",
                   cold_subset="53")


def test_line_numbers_count_blank_lines(fixed_release):
    path = fixed_release.subsets["630"].paths["tuples_test_posi"]
    lines = path.read_text().splitlines()
    lines.insert(2, "")                       # the numeric parser skips this line
    lines[4] = "2,1,0,3"                      # file line 5, data row 4: shoe index 3 of 3
    path.write_text("\n".join(lines) + "\n")
    read_expecting(fixed_release, r"tuples_test_posi, line 5: shoe index 3")


def test_variable_layout_allows_minus_one_only_in_the_second_top(variable_release):
    path = variable_release.subsets["519"].paths["tuples_test_posi"]
    edit_line(path, 3, "1,2,-1,0,0")
    ds = read_polyvore_u(variable_release.root, "519", image_size=8)
    assert ds.outfit_items[8 + 7 + 1, 1] == -1
    edit_line(path, 3, "1,-1,2,0,0")
    read_expecting(variable_release, r"tuples_test_posi, line 3: -1 \(absent\) in column 2 \(top\)",
                   subset="519")


def test_negative_count_must_be_a_multiple_of_positives(fixed_release):
    path = fixed_release.subsets["630"].paths["tuples_val_nega"]
    path.write_text(path.read_text() + "0,1,1,1\n")
    read_expecting(fixed_release, r"tuples_val_nega: 22 negative rows is not a multiple of the 7 "
                                  r"positive rows in tuples_val_posi")


def test_blank_line_inside_an_image_list(fixed_release):
    path = fixed_release.root / "tuples_630" / "image_list_top"
    lines = path.read_text().splitlines()
    lines.insert(2, "")
    path.write_text("\n".join(lines) + "\n")
    read_expecting(fixed_release, r"image_list_top, line 3: empty line inside the image list")


def test_bad_image_size_and_layout(fixed_release):
    read_expecting(fixed_release, r"image_size=0 must be an integer >= 1", image_size=0)
    read_expecting(fixed_release, r"no lmdb layout found", image_layout="lmdb")


def test_a_negative_takes_its_positives_user(fixed_release):
    sub = fixed_release.subsets["630"]
    rows = sub.tables["tuples_test_nega"].copy()
    rows[:, 0] = 2 - rows[:, 0]          # the file's user column of negatives is ignored
    write_csv(sub.paths["tuples_test_nega"], sub.header, rows)
    cand = read_polyvore_u(fixed_release.root, "630", image_size=8).candidate_set("test")
    np.testing.assert_array_equal(cand.user, np.repeat(MAIN_USERS["test"], 4))


@pytest.mark.parametrize("which,subset,cold", [("fixed", "630", 2), ("variable", "519", 2)])
def test_00_data_stage_reads_a_release(which, subset, cold, fixed_release, variable_release, tmp_path):
    """What `papermill 00_data -p source <root> -p subset 630` does: the same canonical run folder."""
    from fndkit import stages
    from fndkit.config import DataConfig

    release = fixed_release if which == "fixed" else variable_release
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random fixture need not keep test items out of train
        ds = stages.prepare_data(tmp_path / "run", DataConfig(source=str(release.root), subset=subset,
                                                              image_size=16))
    assert ds.meta["source"] == "polyvore-u" and ds.meta["cold_subset"] in ("53", "32")
    assert len(ds.cold_users) == cold and ds.image_size == 16
    for key in ("val_teacher/random", "val_student/random", "test/random", "test/hard"):
        assert key in ds.candidates
    again = stages.load_run_dataset(tmp_path / "run")
    assert again.fingerprint() == ds.fingerprint()
    with pytest.raises(DatasetError, match="neither 'synthetic' nor an existing folder"):
        stages.build_dataset(DataConfig(source=str(tmp_path / "nowhere")))
