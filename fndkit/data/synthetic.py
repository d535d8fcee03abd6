"""The built-in synthetic Polyvore-style benchmark, with ground-truth user tastes.

Items are procedurally rendered clothes (top / bottom / shoe silhouettes in one of several shape
variants, filled with a palette colour and a pattern). Every item has a latent *style* built from
its visible attributes, so style is mostly visible in the pixels. Every user has one to three taste
*anchors* in style space and posts outfits whose items lie near one of them. Because the generator
knows every item's style and every user's anchors, it knows how much any user likes any outfit, so
the real false negatives among random mixtures (paper §1, Fig. 1) are known instead of argued for.

Generative model (all vectors in R^k, ``k = style_dim``; ``normalise`` = divide by the L2 norm):

* item style ``s_i = normalise(E_colour[c_i] + E_pattern[p_i] + E_shape[cat_i, v_i] + σ_s g_i)``
  with random attribute embeddings ``E ~ N(0, 1/k)`` and ``g_i ~ N(0, 1/k)``.
* user anchor ``a = normalise(E_colour[c] + E_pattern[p] + Σ_cat E_shape[cat, v_cat] / √3 + σ_a g)``
  for a random favourite colour, pattern and one shape per category.
* true affinity of outfit ``o`` (present items ``i ∈ o``) for user ``u``::

      compat(o) = mean over item pairs i≠j of cos(s_i, s_j)
      taste(u, o) = max over u's anchors a of cos(a, mean_i s_i)
      affinity(u, o) = compat_weight * compat(o) + taste_weight * taste(u, o)   (0.5 / 0.5)

* positives: for each outfit pick one of the user's anchors (anchor weights ~ Dirichlet(2)), then
  fill every slot with an item of the slot's category drawn with probability
  ``∝ exp(cos(s_i, a) / temperature + popularity_i)`` (``popularity_i ~ N(0, popularity_scale²)``).
  Train outfits are drawn first; the user's validation and test outfits are then drawn with the
  user's train items removed from the pools, so no held-out item occurs in that user's train outfits
  (paper §4.1.1). Exact duplicate outfits of one user are redrawn.
* the false-negative threshold is the ``false_negative_quantile`` (0.1) quantile of the true
  affinities of the trained users' own positive outfits (every split): a random mixture is a
  *false negative* for a user when the user would like it at least as much as 90% of what they
  actually posted.
* the false-negative-rate knob ``taste_breadth`` (``make_dataset``) multiplies ``temperature``: a
  broader taste spreads each user's positives, so more random mixtures pass that threshold.

Cold-start users (a separate pool, like Polyvore-53/-32) come after the trained users, have their
own anchors and draw from their own item pool (item ids after the trained pool's), and all their
outfits have split ``cold``.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import to_json
from ..config import check_int
from .sampling import random_mixtures
from .truth import SyntheticTruth  # noqa: F401 (re-exported)
from .appearance import (FREQUENCIES, HUES, MASK_RES, RICH_PATTERNS, RICH_PIXEL_NOISE, RICH_SHAPES, check_appearance,
                         draw_rich_attributes, render_rich, rich_anchor_proto, rich_style_parts,
                         rich_visible_style)
from .schema import (CATEGORIES, FIXED_LAYOUT, SPLITS, VARIABLE_LAYOUT, ArrayImages, DatasetError,
                     OutfitDataset, outfit_hashes, split_index, split_sizes)

# Sizes per scale. The polyvore scales copy the real datasets' counts (paper Table 1): trained
# pool like Polyvore-630 / -519, cold pool like Polyvore-53 / -32.
SCALES: dict[str, dict[str, Any]] = {
    "tiny": dict(n_users=6, n_outfits=210, n_items=360,
                 n_cold_users=3, n_cold_outfits=96, n_cold_items=150, images_on_disk=False),
    "demo": dict(n_users=40, n_outfits=4000, n_items=3000,
                 n_cold_users=10, n_cold_outfits=1000, n_cold_items=800, images_on_disk=False),
    "polyvore630": dict(n_users=630, n_outfits=162_945, n_items=199_537,
                        n_cold_users=53, n_cold_outfits=13_707, n_cold_items=26_727,
                        images_on_disk=True),
    "polyvore519": dict(n_users=519, n_outfits=106_806, n_items=178_481,
                        n_cold_users=32, n_cold_outfits=6_565, n_cold_items=18_656,
                        images_on_disk=True),
}

# Generator parameters shared by every scale: natural values, not tuned to any false-negative rate.
GENERATOR: dict[str, Any] = dict(
    style_dim=16,
    style_noise=0.35,          # σ_s: item style beyond its visible attributes
    anchor_noise=0.35,         # σ_a: user taste beyond a colour/pattern/shape prototype
    max_anchors=3,             # each user has 1..max_anchors taste anchors
    temperature=0.1,           # sharpness of exp(cos(style, anchor) / temperature)
    popularity_scale=0.5,      # std of the per-item log-popularity
    compat_weight=0.5,
    taste_weight=0.5,
    false_negative_quantile=0.1,
    second_top_prob=0.4,       # variable-size mode: share of outfits with a second top
    category_share=(0.34, 0.33, 0.33),
    outfit_count_floor=0.75,   # every user gets at least this share of the mean outfit count
    outfit_count_spread=0.5,   # lognormal sigma of the per-user outfit counts above the floor
    colour_jitter=10.0,        # per-item shade jitter (RGB std)
    pixel_noise=4.0,           # per-pixel noise (RGB std)
    redraw_rounds=200,         # attempts to redraw duplicate / colliding outfits
)

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "charcoal")
PALETTE = np.array([(200, 40, 45), (240, 135, 30), (230, 200, 40), (45, 145, 70),
                    (40, 85, 195), (120, 60, 165), (235, 115, 170), (55, 55, 60)], dtype=np.float32)
PATTERNS = ("solid", "stripes", "dots", "checks", "diagonal")
SHAPES = {"top": ("t-shirt", "long sleeve", "tank"),
          "bottom": ("trousers", "shorts", "skirt"),
          "shoe": ("sneaker", "boot", "heel")}
BACKGROUND = np.array((236, 234, 230), dtype=np.float32)
N_PHASES = 4            # pattern offsets, so two items with one pattern do not match pixel for pixel
_RENDER_CHUNK = 4096    # items rendered per vectorised step (fixed: image bytes depend on it)


# --------------------------------------------------------------------------------------------
# Ground truth


def true_affinity(dataset: OutfitDataset, user_ids: np.ndarray, outfit_items: np.ndarray) -> np.ndarray:
    """The generator's affinity of each outfit for its user (see :class:`SyntheticTruth`).

    user_ids: [M]; outfit_items: [M, S] (-1 = absent). Returns float64 [M].
    """
    if dataset.truth is None:
        raise DatasetError(f"dataset {dataset.name!r} has no ground truth; only the synthetic "
                           f"benchmark (fndkit.data.synthetic.make_dataset) carries one")
    return dataset.truth.true_affinity(user_ids, outfit_items)


# --------------------------------------------------------------------------------------------
# Rendering


def _grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(image_size, dtype=np.float64) + 0.5) / image_size
    return np.meshgrid(c, c, indexing="ij")  # y (rows), x (columns) in [0, 1]


def silhouette_masks(image_size: int = 32) -> np.ndarray:
    """bool [3 categories, 3 shape variants, S, S]: where the garment is (order of ``SHAPES``)."""
    y, x = _grid(image_size)

    def rect(x0, x1, y0, y1):
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    def ellipse(cx, cy, rx, ry):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0

    torso = rect(0.28, 0.72, 0.22, 0.9)
    neck = ellipse(0.5, 0.22, 0.1, 0.07)
    t_shirt = (torso | rect(0.1, 0.9, 0.22, 0.42)) & ~neck
    long_sleeve = (torso | rect(0.14, 0.86, 0.22, 0.34) | rect(0.1, 0.26, 0.22, 0.86)
                   | rect(0.74, 0.9, 0.22, 0.86)) & ~neck
    tank = ((rect(0.3, 0.7, 0.35, 0.9) | rect(0.33, 0.41, 0.12, 0.36) | rect(0.59, 0.67, 0.12, 0.36))
            & ~ellipse(0.5, 0.35, 0.12, 0.07))
    waist = rect(0.28, 0.72, 0.08, 0.3)
    trousers = waist | rect(0.28, 0.46, 0.08, 0.94) | rect(0.54, 0.72, 0.08, 0.94)
    shorts = waist | rect(0.25, 0.46, 0.2, 0.52) | rect(0.54, 0.75, 0.2, 0.52)
    skirt = (y >= 0.1) & (y <= 0.72) & (np.abs(x - 0.5) <= 0.2 + 0.2 * (y - 0.1) / 0.62)
    sneaker = rect(0.12, 0.84, 0.56, 0.78) | ellipse(0.4, 0.56, 0.27, 0.15) | ellipse(0.84, 0.67, 0.07, 0.11)
    boot = rect(0.22, 0.5, 0.12, 0.8) | rect(0.22, 0.84, 0.58, 0.8) | ellipse(0.84, 0.69, 0.07, 0.11)
    slope = 0.42 + 0.3 * (x - 0.2) / 0.66
    heel = (((x >= 0.2) & (x <= 0.86) & (y >= slope) & (y <= slope + 0.1))
            | rect(0.2, 0.27, 0.42, 0.9) | ellipse(0.82, 0.76, 0.08, 0.07))
    return np.stack([np.stack([t_shirt, long_sleeve, tank]),
                     np.stack([trousers, shorts, skirt]),
                     np.stack([sneaker, boot, heel])])


def pattern_templates(image_size: int = 32) -> np.ndarray:
    """bool [n_patterns, N_PHASES, S, S]: where the pattern's second shade goes (order of ``PATTERNS``)."""
    y, x = _grid(image_size)
    out = np.zeros((len(PATTERNS), N_PHASES, image_size, image_size), dtype=bool)
    for ph in range(N_PHASES):
        shift = ph / N_PHASES
        out[1, ph] = np.floor(y / 0.1 + 2 * shift) % 2 == 1                        # stripes
        cy = (y / 0.2 + shift) % 1.0 - 0.5
        cx = (x / 0.2 + shift) % 1.0 - 0.5
        out[2, ph] = cy ** 2 + cx ** 2 <= 0.3 ** 2                                # dots
        out[3, ph] = (np.floor(x / 0.14 + shift) + np.floor(y / 0.14 + shift)) % 2 == 1  # checks
        out[4, ph] = np.floor((x + y) / 0.12 + 2 * shift) % 2 == 1                 # diagonal
    return out


def _noise_table(pixel_noise: float) -> np.ndarray:
    """int16 [256]: a random byte mapped to N(0, pixel_noise²) by its quantile (cheap fresh noise)."""
    dist = statistics.NormalDist(0.0, pixel_noise)
    return np.array([round(dist.inv_cdf((b + 0.5) / 256)) for b in range(256)], dtype=np.int16)


def render_items(category: np.ndarray, shape: np.ndarray, pattern: np.ndarray, rgb: np.ndarray,
                 phase: np.ndarray | None = None, image_size: int = 32, pixel_noise: float = 4.0,
                 rng: np.random.Generator | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Render items as uint8 [n, S, S, 3], vectorised in chunks.

    category, shape, pattern, phase: int [n]; rgb: float [n, 3] (the item's colour). Background
    ``BACKGROUND``; inside the silhouette the colour, with the pattern drawn in a darker shade (a
    lighter one for dark colours); plus per-pixel noise of std ``pixel_noise`` (``rng`` draws it;
    None = no noise). ``out`` (e.g. a memory-mapped array) receives the pixels when given.
    """
    category, shape, pattern = (np.asarray(a, dtype=np.int64) for a in (category, shape, pattern))
    n = category.shape[0]
    phase = np.zeros(n, dtype=np.int64) if phase is None else np.asarray(phase, dtype=np.int64)
    rgb = np.asarray(rgb, dtype=np.float64).reshape(n, 3)
    if out is None:
        out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    # Every pixel is background, colour or pattern shade: render a code image (0, 1, 2) per item
    # and look the code up in a per-item 3-colour table, all in uint8.
    masks = silhouette_masks(image_size).reshape(-1, image_size, image_size).astype(np.uint8)
    templates = pattern_templates(image_size).reshape(-1, image_size, image_size).astype(np.uint8)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    secondary = rgb * 0.5 + np.where(luma < 90, 120.0, 0.0)[:, None]
    table = np.stack([np.broadcast_to(BACKGROUND, rgb.shape), rgb, secondary], axis=1)
    table = np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(-1, 3)  # [n * 3, 3]
    noise = _noise_table(pixel_noise) if rng is not None and pixel_noise > 0 else None
    for lo in range(0, n, _RENDER_CHUNK):
        hi = min(lo + _RENDER_CHUNK, n)
        code = masks[category[lo:hi] * 3 + shape[lo:hi]] * (1 + templates[pattern[lo:hi] * N_PHASES
                                                                          + phase[lo:hi]])
        img = table[code + 3 * np.arange(lo, hi)[:, None, None]]             # [c, S, S, 3]
        if noise is not None:
            grain = noise[np.frombuffer(rng.bytes(img.size), dtype=np.uint8)].reshape(img.shape)
            img = np.clip(img + grain, 0, 255).astype(np.uint8)
        out[lo:hi] = img
    return out


# --------------------------------------------------------------------------------------------
# Generation


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _outfit_counts(rng: np.random.Generator, total: int, n_users: int, p: dict) -> np.ndarray:
    """Per-user outfit counts summing to ``total``: a floor plus a lognormal-weighted remainder."""
    if n_users == 0:
        return np.zeros(0, dtype=np.int64)
    floor = max(4, int(p["outfit_count_floor"] * total / n_users))
    if floor * n_users > total:
        raise DatasetError(f"{total} outfits cannot give {n_users} users at least {floor} each")
    weights = rng.lognormal(0.0, p["outfit_count_spread"], n_users)
    return floor + rng.multinomial(total - floor * n_users, weights / weights.sum())


class NpyWriter:
    """A ``.npy`` file filled slice by slice (``out[lo:hi] = rows``, as :func:`render_items` fills
    its ``out``) with ordinary writes, then read back memory-mapped. Unlike a writable memory map,
    the written pages stay in the kernel's page cache instead of this process's resident memory:
    generating polyvore630 peaks at about 0.3 GiB instead of 0.9 GiB (its images are 0.65 GiB)."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype=np.uint8):
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self._file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                          "fortran_order": False, "shape": self.shape})
        self._start = self._file.tell()
        self._file.truncate(self._start + self.row_bytes * self.shape[0])

    def __setitem__(self, rows: slice, values) -> None:
        start, stop, step = rows.indices(self.shape[0]) if isinstance(rows, slice) else (None, None, None)
        data = np.ascontiguousarray(values, dtype=self.dtype)
        if step != 1 or data.shape != (stop - start, *self.shape[1:]):
            raise ValueError(f"NpyWriter takes contiguous row slices of shape [n, {self.shape[1:]}], "
                             f"got {rows!r} for {data.shape}")
        self._file.seek(self._start + start * self.row_bytes)
        self._file.write(memoryview(data).cast("B"))

    def close(self) -> None:
        self._file.close()


class _Pool:
    """One item pool (trained or cold): items per category with style and log-popularity."""

    def __init__(self, item_ids, category, style, popularity):
        self.items = [item_ids[category[item_ids] == c] for c in range(len(CATEGORIES))]
        self.style_t = [np.ascontiguousarray(style[ids].T) for ids in self.items]  # [k, P_c]
        self.popularity = [popularity[ids] for ids in self.items]
        # position of an item id inside its category's pool (-1: not in this pool)
        self.position = np.full(category.shape[0], -1, dtype=np.int64)
        for ids in self.items:
            self.position[ids] = np.arange(ids.size)


class _Sampler:
    """Per category, a user's item weights [A, P_c] and their running sums (inverse-CDF draws)."""

    def __init__(self, weights: list[np.ndarray]):
        self.weights = weights
        self.cdf = [np.cumsum(w, axis=1) for w in weights]

    @classmethod
    def for_user(cls, pool: _Pool, anchors: np.ndarray, temperature: float) -> "_Sampler":
        weights = []
        for c in range(len(CATEGORIES)):
            # einsum, not a BLAS matmul: for [A, k] x [k, P] it is faster and never multi-threads.
            logits = np.einsum("ak,kp->ap", anchors, pool.style_t[c]) / temperature + pool.popularity[c]
            weights.append(np.exp(logits - logits.max(1, keepdims=True)))
        return cls(weights)

    def without(self, positions: list[np.ndarray]) -> "_Sampler":
        """The same weights with the given pool positions (per category) set to zero."""
        weights = []
        for w, pos in zip(self.weights, positions):
            w = w.copy()
            w[:, pos] = 0.0
            weights.append(w)
        return _Sampler(weights)

    def draw(self, rng, c: int, anchor_of: np.ndarray) -> np.ndarray:
        """One pool position of category c per row, from the weights of anchor_of[row]."""
        cdf = self.cdf[c]
        pos = np.empty(anchor_of.shape[0], dtype=np.int64)
        u = rng.random(anchor_of.shape[0])
        for a in range(cdf.shape[0]):
            rows = np.flatnonzero(anchor_of == a)
            if rows.size:
                pos[rows] = np.searchsorted(cdf[a], u[rows] * cdf[a, -1], side="right")
        return np.minimum(pos, cdf.shape[1] - 1)


def _draw_outfits(rng, pool: _Pool, sampler: _Sampler, anchor_of: np.ndarray,
                  layout: np.ndarray, slot_categories: np.ndarray, p: dict) -> np.ndarray:
    """Outfits [n, S] for one user: each present slot drawn near the outfit's anchor.

    layout: bool [n, S] (True = slot present). Rows that repeat an earlier row of this call, hold
    one item twice, or hit a zero-weight (excluded) item are redrawn.
    """
    n, S = layout.shape
    pos = np.full((n, S), -1, dtype=np.int64)
    items = np.full((n, S), -1, dtype=np.int64)
    redo = np.arange(n)
    excluded = np.zeros(n, dtype=bool)
    for _ in range(p["redraw_rounds"]):
        for s in range(S):
            c = int(slot_categories[s])
            rows = redo[layout[redo, s]]
            pos[rows, s] = sampler.draw(rng, c, anchor_of[rows])
            items[rows, s] = pool.items[c][pos[rows, s]]
        excluded[:] = False
        for s in range(S):
            rows = np.flatnonzero(layout[:, s])
            excluded[rows] |= sampler.weights[int(slot_categories[s])][anchor_of[rows], pos[rows, s]] == 0
        bad = excluded.copy()
        for s in range(S):
            for t in range(s + 1, S):
                bad |= layout[:, s] & layout[:, t] & (items[:, s] == items[:, t])
        _, first = np.unique(outfit_hashes(items), return_index=True)
        repeated = np.ones(n, dtype=bool)
        repeated[first] = False
        redo = np.flatnonzero(bad | repeated)
        if redo.size == 0:
            return items
    # Pools too small to avoid every repeat: keep the repeats, but never an excluded item.
    if excluded.any():
        raise DatasetError("item pools are too small to keep held-out items out of train outfits")
    return items


def _layouts(rng, n: int, variable_size: bool, p: dict) -> np.ndarray:
    if not variable_size:
        return np.ones((n, len(FIXED_LAYOUT)), dtype=bool)
    layout = np.ones((n, len(VARIABLE_LAYOUT)), dtype=bool)
    layout[:, 1] = rng.random(n) < p["second_top_prob"]
    return layout


def make_dataset(scale: str = "tiny", seed: int = 0, variable_size: bool = False,
                 image_size: int = 32, cache_dir: str | Path | None = None,
                 images_on_disk: bool | None = None, taste_breadth: float = 1.0,
                 appearance: str = "simple") -> OutfitDataset:
    """Generate the synthetic benchmark at ``scale`` (a key of ``SCALES``).

    Returns an :class:`OutfitDataset` with ``truth`` (a :class:`SyntheticTruth`), item attributes
    ``colour``, ``pattern``, ``shape`` (int [I]) and no evaluation candidates. Fixed-size outfits
    use ``FIXED_LAYOUT`` (top, bottom, shoe); ``variable_size=True`` uses ``VARIABLE_LAYOUT`` with
    an optional second top (-1 when absent). Images are uint8 [I, S, S, 3], ``S = image_size``;
    at the polyvore scales (or ``images_on_disk=True``) they are written to a memory-mapped .npy
    under ``cache_dir`` (default: a new temporary folder, which the caller may delete once the
    dataset is saved). The same seed gives identical tables and image bytes.

    ``taste_breadth`` is the false-negative-rate knob: it multiplies the ``temperature`` with
    which users draw their positives, so a broader taste spreads a user's positives further from
    their anchors and more random mixtures reach the false-negative threshold. Everything else
    (sizes, items, images, anchors, random streams) is unchanged; 1.0 is the benchmark as it
    always was, bit for bit. Measured at demo scale, seed 0 (:func:`false_negative_fraction`):
    0.7 → 1.9%, 1.0 → 6.7%, 1.3 → 15%, 1.6 → 26%.

    ``appearance``: ``"simple"`` (the default benchmark, unchanged bit for bit) or ``"rich"``
    (:mod:`fndkit.data.appearance`: more and finer attributes under pose, clutter, occlusion and
    lighting, so a bigger CNN knows more than a small one; meant for ``image_size=64``). Rich items
    also carry the attribute ``frequency``; the dataset is named ``synthetic-<scale>-rich``.
    """
    if scale not in SCALES:
        raise DatasetError(f"unknown synthetic scale {scale!r}; valid scales: {', '.join(SCALES)}")
    image_size = check_int("image_size", image_size, 16, " (pixels per side)", error=ValueError)
    sizes = SCALES[scale]
    p = dict(GENERATOR)
    p["temperature"] = p["temperature"] * check_taste_breadth(taste_breadth)
    p["taste_breadth"] = float(taste_breadth)
    rich = check_appearance(appearance) == "rich"
    on_disk = sizes["images_on_disk"] if images_on_disk is None else bool(images_on_disk)
    rng_items, rng_users, rng_outfits, rng_images = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    k, n_cat = p["style_dim"], len(CATEGORIES)
    n_shapes = max(len(v) for v in SHAPES.values())

    # ---- items: trained pool first, then the cold pool
    n_items, n_cold_items = sizes["n_items"], sizes["n_cold_items"]
    n_total_items = n_items + n_cold_items
    category = np.concatenate([
        rng_items.permutation(np.repeat(np.arange(n_cat), _shares(n, p["category_share"])))
        for n in (n_items, n_cold_items)]).astype(np.int8)
    scale_k = 1.0 / math.sqrt(k)
    if rich:  # its own attributes and embeddings (fndkit.data.appearance); simple stays as it was
        looks = draw_rich_attributes(rng_items, n_total_items)
        colour, pattern, shape = looks["colour"], looks["pattern"], looks["shape"]
        E_rich = rich_style_parts(rng_items, k, n_cat)
        visible = rich_visible_style(E_rich, category, colour, pattern, looks["frequency"], shape)
    else:
        colour = rng_items.integers(0, len(COLOURS), n_total_items)
        pattern = rng_items.integers(0, len(PATTERNS), n_total_items)
        shape = rng_items.integers(0, n_shapes, n_total_items)
        phase = rng_items.integers(0, N_PHASES, n_total_items)
        rgb = np.clip(PALETTE[colour] + rng_items.normal(0, p["colour_jitter"], (n_total_items, 3)), 0, 255)
        E_colour = rng_items.normal(0, scale_k, (len(COLOURS), k))
        E_pattern = rng_items.normal(0, scale_k, (len(PATTERNS), k))
        E_shape = rng_items.normal(0, scale_k, (n_cat, n_shapes, k))
        visible = E_colour[colour] + E_pattern[pattern] + E_shape[category, shape]
    item_style = _normalise(visible + p["style_noise"] * rng_items.normal(0, scale_k, (n_total_items, k)))
    popularity = p["popularity_scale"] * rng_items.standard_normal(n_total_items)

    # ---- users: trained first, then cold; 1..max_anchors anchors each
    n_users, n_cold = sizes["n_users"], sizes["n_cold_users"]
    U, A = n_users + n_cold, p["max_anchors"]
    n_anchors = rng_users.integers(1, A + 1, U)
    anchor_mask = np.arange(A)[None, :] < n_anchors[:, None]
    if rich:
        proto = rich_anchor_proto(rng_users, E_rich, U, A)
    else:
        proto = (E_colour[rng_users.integers(0, len(COLOURS), (U, A))]
                 + E_pattern[rng_users.integers(0, len(PATTERNS), (U, A))]
                 + sum(E_shape[c][rng_users.integers(0, n_shapes, (U, A))] for c in range(n_cat))
                 / math.sqrt(n_cat))
    anchors = _normalise(proto + p["anchor_noise"] * rng_users.normal(0, scale_k, (U, A, k)))
    anchors = np.where(anchor_mask[..., None], anchors, 0.0)
    anchor_share = rng_users.dirichlet(np.full(A, 2.0), U) * anchor_mask
    anchor_share /= anchor_share.sum(1, keepdims=True)
    counts = np.concatenate([_outfit_counts(rng_users, sizes["n_outfits"], n_users, p),
                             _outfit_counts(rng_users, sizes["n_cold_outfits"], n_cold, p)])

    # ---- outfits, one user at a time (vectorised over that user's outfits)
    slot_categories = np.array(VARIABLE_LAYOUT if variable_size else FIXED_LAYOUT, dtype=np.int8)
    pools = [_Pool(np.arange(n_items), category, item_style, popularity),
             _Pool(np.arange(n_items, n_total_items), category, item_style, popularity)]
    blocks, users_of, splits_of = [], [], []
    for u in range(U):
        cold = u >= n_users
        pool, n = pools[int(cold)], int(counts[u])
        sampler = _Sampler.for_user(pool, anchors[u, :n_anchors[u]], p["temperature"])
        anchor_of = rng_outfits.choice(n_anchors[u], size=n, p=anchor_share[u, :n_anchors[u]])
        layout = _layouts(rng_outfits, n, variable_size, p)
        if cold:
            blocks.append(_draw_outfits(rng_outfits, pool, sampler, anchor_of, layout,
                                        slot_categories, p))
            splits_of.append(np.full(n, split_index("cold"), dtype=np.int8))
        else:
            sz = split_sizes(n)
            n_train = sz["train"]
            train = _draw_outfits(rng_outfits, pool, sampler, anchor_of[:n_train], layout[:n_train],
                                  slot_categories, p)
            # Held-out outfits may not reuse any of this user's train items (paper §4.1.1).
            train_slots = [train[:, slot_categories == c] for c in range(n_cat)]
            train_pos = [pool.position[t[t >= 0]] for t in train_slots]
            held = _draw_outfits(rng_outfits, pool, sampler.without(train_pos),
                                 anchor_of[n_train:], layout[n_train:], slot_categories, p)
            blocks += [train, held]
            splits_of.append(np.repeat(np.arange(4, dtype=np.int8),
                                       [sz[s] for s in SPLITS[:4]]))
        users_of.append(np.full(n, u, dtype=np.int64))
    outfit_items = np.concatenate(blocks)
    outfit_user = np.concatenate(users_of)
    outfit_split = np.concatenate(splits_of)
    user_pool = (np.arange(U) >= n_users).astype(np.int8)

    truth = SyntheticTruth(item_style=item_style.astype(np.float32),
                           user_anchors=anchors.astype(np.float32), anchor_mask=anchor_mask,
                           compat_weight=p["compat_weight"], taste_weight=p["taste_weight"],
                           false_negative_quantile=p["false_negative_quantile"])
    trained = outfit_split != split_index("cold")
    positive_affinity = truth.true_affinity(outfit_user[trained], outfit_items[trained])
    truth.false_negative_threshold = float(np.quantile(positive_affinity,
                                                       p["false_negative_quantile"]))

    # ---- images
    name = f"synthetic-{scale}" + ("-var" if variable_size else "") + ("-rich" if rich else "")
    shape_img = (n_total_items, image_size, image_size, 3)
    if on_disk:
        folder = Path(cache_dir) if cache_dir is not None else Path(
            tempfile.mkdtemp(prefix="fndkit-synthetic-"))
        folder.mkdir(parents=True, exist_ok=True)
        image_path = folder / f"{name}-seed{seed}-{image_size}px.npy"
        array = NpyWriter(image_path, shape_img)
    else:
        array = np.empty(shape_img, dtype=np.uint8)
    if rich:
        render_rich(category, looks, image_size, rng_images, silhouette_masks(MASK_RES), out=array)
    else:
        render_items(category, shape, pattern, rgb, phase=phase, image_size=image_size,
                     pixel_noise=p["pixel_noise"], rng=rng_images, out=array)
    if on_disk:
        array.close()
        array = np.load(image_path, mmap_mode="r")

    generator = {**sizes, **p, "colours": COLOURS, "patterns": PATTERNS, "shapes": SHAPES}
    if rich:  # (only then: the simple benchmark's meta stays as it was)
        generator.update(appearance="rich", colours=HUES, patterns=RICH_PATTERNS, shapes=RICH_SHAPES,
                         frequencies=FREQUENCIES, pixel_noise=RICH_PIXEL_NOISE)
    meta = {"source": "synthetic", "scale": scale, "seed": int(seed),
            "variable_size": bool(variable_size), "image_size": image_size,
            # JSON-clean (tuples as lists), so the meta read back by OutfitDataset.load is equal
            "generator": json.loads(to_json(generator))}
    ds = OutfitDataset(name=name, item_category=category, outfit_items=outfit_items,
                       outfit_user=outfit_user, outfit_split=outfit_split,
                       slot_categories=slot_categories, user_pool=user_pool,
                       images=ArrayImages(array), candidates={},
                       item_attributes={"colour": colour.astype(np.int8),
                                        "pattern": pattern.astype(np.int8),
                                        "shape": shape.astype(np.int8),
                                        **({"frequency": looks["frequency"].astype(np.int8)} if rich else {})},
                       truth=truth, meta=meta)
    return ds.validate()


def check_taste_breadth(taste_breadth) -> float:
    """``taste_breadth`` as a float, or a clear error (it must be a positive finite number)."""
    ok = (isinstance(taste_breadth, (int, float, np.integer, np.floating))
          and not isinstance(taste_breadth, bool) and math.isfinite(taste_breadth) and taste_breadth > 0)
    if not ok:
        raise ValueError(f"taste_breadth={taste_breadth!r} must be a positive number (1.0: the "
                         f"benchmark's default; 0.7 … 1.7 moves the false-negative rate over "
                         f"about 2% … 30% at demo scale)")
    return float(taste_breadth)


def _shares(n: int, share) -> np.ndarray:
    """Split n into len(share) integer counts proportional to share (largest remainders)."""
    share = np.asarray(share, dtype=np.float64) / np.sum(share)
    counts = np.floor(n * share).astype(np.int64)
    counts[np.argsort(-(n * share - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


# --------------------------------------------------------------------------------------------
# Self-report


def false_negative_fraction(dataset: OutfitDataset, n_per_user: int = 200, seed: int = 0) -> float:
    """Share of random mixtures that are true false negatives (affinity >= threshold).

    For every trained user draw ``n_per_user`` category-wise random mixtures
    (:func:`fndkit.data.sampling.random_mixtures`, the training sampler's draw) in the layout of a
    random train positive of that user; mixtures equal to one of the user's positives are
    dropped. Returns the fraction over the rest judged false negatives by ``dataset.truth``.
    """
    if dataset.truth is None:
        raise DatasetError(f"dataset {dataset.name!r} has no ground truth to judge false negatives")
    if n_per_user < 1:
        raise ValueError(f"n_per_user must be >= 1, got {n_per_user}")
    rng = np.random.default_rng(seed)
    train = dataset.outfits_of("train")
    order = np.argsort(dataset.outfit_user[train], kind="stable")
    train_sorted = train[order]
    per_user = np.bincount(dataset.outfit_user[train], minlength=dataset.n_users)
    start = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    users = dataset.trained_users
    users = users[per_user[users] > 0]
    mix_user = np.repeat(users, n_per_user)
    pick = start[mix_user] + (rng.random(mix_user.size) * per_user[mix_user]).astype(np.int64)
    # the training sampler's own mixtures; only the user's own positives are rejected below
    mix = random_mixtures(dataset, dataset.outfit_items[train_sorted[pick]], "train", rng, reject=())
    # (user, outfit) keys: a mixture equal to one of the user's own positives is not a negative.
    pos_keys = _user_outfit_keys(dataset.outfit_user, dataset.outfit_items)
    keep = ~np.isin(_user_outfit_keys(mix_user, mix), pos_keys)
    return float(dataset.truth.is_false_negative(mix_user[keep], mix[keep]).mean())


def _user_outfit_keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return outfit_hashes(items) * np.uint64(0x100000001B3) + np.asarray(users).astype(np.uint64)
