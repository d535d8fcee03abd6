"""A generated stand-in for a Polyvore-U release, in its exact layout, at any size (for benches).

:func:`write_release` writes what :func:`fndkit.data.polyvore.read_polyvore_u` reads::

    root/images/291x291/<sha1-like name>.jpg     one JPEG per item, 291 px, about 25 KB
    root/tuples_630/image_list_{top,bottom,shoe}  one file name per line
    root/tuples_630/tuples_{train,val,test}_posi  user,top,bottom,shoe
    root/tuples_630/tuples_{val,test}_nega        10 random mixtures per positive
    root/FIXTURE.json                             written last: the fixture is complete

The images look like product photos as far as a JPEG decoder is concerned: a white background and
an object with a smooth colour field and pixel noise, so that they cost what real ones cost to
decode (mean ~25 KB at quality 92; the real release's are ~31 KB). Their content means nothing:
the fixture measures speed, not accuracy. Users, outfits and items keep Polyvore-630's proportions
(630 users, 162,945 outfits, 199,537 items) scaled to ``n_items``.

Writing is parallel over processes and resumable: an image already on disk is not written again,
and ``FIXTURE.json`` (atomically written last) marks a finished fixture, which is reused as is.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..artifacts import atomic_path, to_json
from .schema import CATEGORIES

POLYVORE630 = {"users": 630, "outfits": 162_945, "items": 199_537}
FIXTURE_FILE = "FIXTURE.json"
IMAGE_PX = 291
FIXTURE_VERSION = 1
_QUALITY = 92


def fixture_image(seed: int, px: int = IMAGE_PX, quality: int = _QUALITY) -> bytes:
    """One product-like JPEG (``px`` square), the same bytes for the same ``seed``."""
    from PIL import Image

    rng = np.random.default_rng([seed, 24])
    grid = rng.integers(30, 226, (6, 6, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(grid).resize((px, px), Image.Resampling.BICUBIC), dtype=np.int16)
    yy, xx = np.ogrid[0:px, 0:px]
    cy, cx, ry, rx = rng.uniform([0.4, 0.4, 0.32, 0.32], [0.6, 0.6, 0.48, 0.48]) * px
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    noise = rng.integers(-30, 31, (px, px, 1), dtype=np.int16)
    pixels = np.where(inside[..., None], np.clip(field + noise, 0, 255), 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()


def image_name(item: int) -> str:
    """A release-like file name: 40 hex digits (the release names files by a SHA-1)."""
    return hashlib.sha1(f"fndkit-fixture-{item}".encode()).hexdigest() + ".jpg"


def _write_images(args: tuple[str, int, int, int]) -> int:
    folder, lo, hi, px = args
    written = 0
    for item in range(lo, hi):
        path = Path(folder) / image_name(item)
        if path.exists():
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(fixture_image(item, px))
        os.replace(tmp, path)   # a killed writer leaves no half image under the real name
        written += 1
    return written


def fixture_sizes(n_items: int, n_users: int | None = None) -> dict:
    """Users and outfits for ``n_items`` items in Polyvore-630's proportions (at least 4 outfits
    per user, so every user has train, val and test rows)."""
    users = n_users or max(4, round(POLYVORE630["users"] * n_items / POLYVORE630["items"]))
    outfits = max(4 * users, round(POLYVORE630["outfits"] * n_items / POLYVORE630["items"]))
    return {"users": int(users), "outfits": int(outfits), "items": int(n_items)}


def write_release(root: str | os.PathLike, n_items: int, *, n_users: int | None = None, seed: int = 0,
                  px: int = IMAGE_PX, ratio: int = 10, workers: int | None = None,
                  progress: bool = True) -> dict:
    """Write (or reuse) a generated release at ``root`` with ``n_items`` items; return its
    ``FIXTURE.json`` record (sizes, bytes of images, seconds it took to write)."""
    from tqdm.auto import tqdm

    root = Path(root)
    sizes = fixture_sizes(n_items, n_users)
    want = {"version": FIXTURE_VERSION, **sizes, "seed": int(seed), "px": int(px), "ratio": int(ratio)}
    marker = root / FIXTURE_FILE
    if marker.is_file():
        have = json.loads(marker.read_text())
        if {k: have.get(k) for k in want} == want:
            return have
        raise ValueError(f"{root} holds another fixture ({ {k: have.get(k) for k in want} }); delete it "
                         f"or pick another folder")
    start = time.perf_counter()
    image_dir = root / "images" / "291x291"
    image_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or (os.cpu_count() or 1)
    chunk = 500
    jobs = [(str(image_dir), lo, min(n_items, lo + chunk), px) for lo in range(0, n_items, chunk)]
    bar = tqdm(total=n_items, desc="writing fixture JPEGs", unit="img", disable=not progress)
    if workers == 1:
        for job in jobs:
            _write_images(job)
            bar.update(job[2] - job[1])
    else:
        with ProcessPoolExecutor(workers) as pool:
            for job, _ in zip(jobs, pool.map(_write_images, jobs)):
                bar.update(job[2] - job[1])
    bar.close()
    images_seconds = time.perf_counter() - start

    # items: a third of each category, in order; outfits: random items per category, users round robin
    rng = np.random.default_rng([seed, 630])
    per_cat = np.array_split(np.arange(n_items), len(CATEGORIES))
    folder = root / "tuples_630"
    folder.mkdir(exist_ok=True)
    for cat, ids in zip(CATEGORIES, per_cat):
        (folder / f"image_list_{cat}").write_text("".join(image_name(int(i)) + "\n" for i in ids))
    users = sizes["users"]

    def outfits(user_col: np.ndarray) -> np.ndarray:
        cols = [rng.integers(0, len(ids), len(user_col)) for ids in per_cat]
        return np.column_stack([user_col] + cols).astype(np.int64)

    # per user 9:2:2 train / val / test, as the release splits its users' outfits
    per_user = np.bincount(rng.integers(0, users, sizes["outfits"] - 4 * users), minlength=users) + 4
    n_test = np.maximum(1, np.round(per_user * 2 / 13)).astype(int)
    n_val = np.maximum(1, np.round(per_user * 2 / 13)).astype(int)
    counts = {"train": per_user - n_test - n_val, "val": n_val, "test": n_test}
    header = "user,top,bottom,shoe\n"
    for split, count in counts.items():
        posi = outfits(np.repeat(np.arange(users), count))
        tables = {"posi": posi}
        if split != "train":
            tables["nega"] = outfits(np.repeat(posi[:, 0], ratio))
        for kind, rows in tables.items():
            text = header + "\n".join(",".join(map(str, r)) for r in rows.tolist()) + "\n"
            (folder / f"tuples_{split}_{kind}").write_text(text)
    image_bytes = sum(os.path.getsize(image_dir / image_name(i)) for i in range(n_items))
    record = {**want, "image_bytes": int(image_bytes), "images_seconds": round(images_seconds, 1),
              "seconds": round(time.perf_counter() - start, 1), "workers": workers}
    with atomic_path(marker) as tmp:
        tmp.write_text(to_json(record) + "\n")
    return record
