"""The ``rich`` appearance of the synthetic benchmark: items whose taste-relevant attributes must be
*seen*, so that a bigger item CNN knows more than a small one (the distillation benchmark).

The default (``simple``) benchmark draws three attributes (8 well-separated colours, 5 patterns,
3 shapes per category) on a plain background, always at the same place: the tiniest CNN reads them
off a 32-px picture, so a teacher cannot know more than its student. ``rich`` keeps the generative
model of :mod:`fndkit.data.synthetic` (style = normalised sum of attribute embeddings + noise, users'
taste anchors in style space, true affinity, true false negatives) and changes only what the style
is made of and how an item looks:

* attributes: 12 hues 30° apart on one saturation / value (neighbours are close), 6 pattern kinds
  (solid, horizontal and vertical stripes, dots, checks, diagonal) × 3 pattern frequencies (a
  solid item has no frequency), 4 shapes per category;
  ``s_i = normalise(E_hue[h] + E_pattern[p] + [p ≠ solid] E_freq[f] + E_shape[cat, v] + σ_s g)``;
* nuisance, none of which carries taste: pose (scale 0.6–1.0, rotation ±25°, position, mirror),
  a background of random grey with 2–4 clutter blobs in the same hues as the garments, an occluding
  grey bar on half of the items, illumination (brightness 0.75–1.15, a per-channel colour cast of
  4%) and pixel noise.

Rendering happens in garment coordinates: each output pixel is mapped back through the item's
pose, so patterns move, scale and turn with the garment. Everything is vectorised in chunks and
drawn from the generator it is given, so the same seed gives the same bytes.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

APPEARANCES = ("simple", "rich")

N_HUES = 12
HUES = tuple(f"hue{int(360 * i / N_HUES)}" for i in range(N_HUES))
RICH_PALETTE = np.array([colorsys.hsv_to_rgb(i / N_HUES, 0.72, 0.86) for i in range(N_HUES)],
                        dtype=np.float64) * 255.0
RICH_PATTERNS = ("solid", "h-stripes", "v-stripes", "dots", "checks", "diagonal")
FREQUENCIES = ("coarse", "medium", "fine")
PERIODS = (0.3, 0.19, 0.12)      # pattern period in garment units (the garment box is 1 × 1)
RICH_SHAPES = {"top": ("t-shirt", "long sleeve", "tank", "crop top"),
               "bottom": ("trousers", "shorts", "skirt", "wide skirt"),
               "shoe": ("sneaker", "boot", "heel", "sandal")}

# Nuisance ranges (none of them enters the style).
POSE = dict(scale=(0.6, 1.0), rotation_deg=25.0)
CLUTTER = (2, 4)                 # blobs per background
OCCLUDE_PROB = 0.5
BRIGHTNESS = (0.75, 1.15)
COLOUR_CAST = 0.04
RICH_PIXEL_NOISE = 8.0
MASK_RES = 128                   # silhouettes are looked up in masks of this resolution
_CHUNK = 512


def check_appearance(appearance) -> str:
    """``appearance`` if known, else a clear error."""
    if appearance not in APPEARANCES:
        raise ValueError(f"appearance={appearance!r} is unknown; choose one of {APPEARANCES} "
                         f"('simple': the default benchmark, 'rich': attributes that must be seen, "
                         f"for distillation; render it at image_size 64)")
    return appearance


def rich_silhouettes(base: np.ndarray) -> np.ndarray:
    """bool [3 categories, 4 shape variants, S, S] in garment coordinates (order of
    ``RICH_SHAPES``): ``base``, the default benchmark's three shapes [3, 3, S, S]
    (:func:`fndkit.data.synthetic.silhouette_masks`), plus one more per category."""
    size = base.shape[-1]
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    y, x = np.meshgrid(c, c, indexing="ij")

    def rect(x0, x1, y0, y1):
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    def ellipse(cx, cy, rx, ry):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0

    crop_top = (rect(0.25, 0.75, 0.22, 0.58) | rect(0.08, 0.92, 0.22, 0.36)) & ~ellipse(0.5, 0.22, 0.14, 0.09)
    wide_skirt = (y >= 0.1) & (y <= 0.9) & (np.abs(x - 0.5) <= 0.12 + 0.36 * (y - 0.1) / 0.8)
    sandal = (rect(0.12, 0.88, 0.74, 0.82) | rect(0.3, 0.38, 0.5, 0.78) | rect(0.55, 0.63, 0.5, 0.78)
              | rect(0.3, 0.63, 0.5, 0.56))
    extra = np.stack([crop_top, wide_skirt, sandal])[:, None]
    return np.concatenate([base, extra], axis=1)


def draw_rich_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Visible attributes and pose / background / lighting of ``n`` items (int and float arrays)."""
    a = {"colour": rng.integers(0, N_HUES, n), "pattern": rng.integers(0, len(RICH_PATTERNS), n),
         "frequency": rng.integers(0, len(FREQUENCIES), n),
         "shape": rng.integers(0, max(len(v) for v in RICH_SHAPES.values()), n),
         "phase": rng.random(n)}
    a["scale"] = rng.uniform(*POSE["scale"], n)
    a["rotation"] = np.deg2rad(rng.uniform(-POSE["rotation_deg"], POSE["rotation_deg"], n))
    slack = (1.0 - a["scale"]) / 2
    a["cx"] = 0.5 + rng.uniform(-1, 1, n) * slack
    a["cy"] = 0.5 + rng.uniform(-1, 1, n) * slack
    a["mirror"] = rng.random(n) < 0.5
    a["hue_jitter"] = rng.normal(0, 6.0, (n, 3))            # per-item shade
    a["background"] = rng.uniform(150, 240, n)
    n_blobs = CLUTTER[1]
    a["blob_on"] = np.arange(n_blobs)[None, :] < rng.integers(CLUTTER[0], CLUTTER[1] + 1, n)[:, None]
    a["blob_colour"] = rng.integers(0, N_HUES, (n, n_blobs))
    a["blob_xy"] = rng.random((n, n_blobs, 2))
    a["blob_r"] = rng.uniform(0.06, 0.2, (n, n_blobs, 2))
    a["occlude"] = rng.random(n) < OCCLUDE_PROB
    a["occ_box"] = np.concatenate([rng.random((n, 2)) * 0.8, rng.uniform(0.12, 0.3, (n, 2))], axis=1)
    a["occ_grey"] = rng.uniform(60, 200, n)
    a["brightness"] = rng.uniform(*BRIGHTNESS, n)
    a["cast"] = rng.normal(1.0, COLOUR_CAST, (n, 3))
    return a


def rich_style_parts(rng: np.random.Generator, k: int, n_cat: int) -> dict[str, np.ndarray]:
    """Attribute embeddings ``E ~ N(0, 1/k)``: hue, pattern, frequency, shape [cat, variant]."""
    s = 1.0 / math.sqrt(k)
    n_shapes = max(len(v) for v in RICH_SHAPES.values())
    return {"colour": rng.normal(0, s, (N_HUES, k)), "pattern": rng.normal(0, s, (len(RICH_PATTERNS), k)),
            "frequency": rng.normal(0, s, (len(FREQUENCIES), k)), "shape": rng.normal(0, s, (n_cat, n_shapes, k))}


def rich_visible_style(E: dict, category, colour, pattern, frequency, shape) -> np.ndarray:
    """Sum of the attribute embeddings an item shows (before noise and normalisation): [n, k].
    A solid item shows no pattern frequency."""
    textured = (np.asarray(pattern) != 0)[:, None]
    return (E["colour"][colour] + E["pattern"][pattern] + textured * E["frequency"][frequency]
            + E["shape"][category, shape])


def rich_anchor_proto(rng: np.random.Generator, E: dict, U: int, A: int) -> np.ndarray:
    """Taste prototypes [U, A, k]: a favourite hue, pattern, frequency and one shape per category."""
    n_cat, n_shapes = E["shape"].shape[:2]
    pattern = rng.integers(0, len(RICH_PATTERNS), (U, A))
    proto = (E["colour"][rng.integers(0, N_HUES, (U, A))] + E["pattern"][pattern]
             + (pattern != 0)[..., None] * E["frequency"][rng.integers(0, len(FREQUENCIES), (U, A))]
             + sum(E["shape"][c][rng.integers(0, n_shapes, (U, A))] for c in range(n_cat)) / math.sqrt(n_cat))
    return proto


def _pattern_code(pattern: np.ndarray, u: np.ndarray, v: np.ndarray, freq: np.ndarray,
                  phase: np.ndarray) -> np.ndarray:
    """bool [c, S, S]: where the pattern's second shade goes, in garment coordinates u, v."""
    period = np.asarray(PERIODS)[freq][:, None, None]
    ph = phase[:, None, None]
    fu, fv = u / period + ph, v / period + ph
    out = np.zeros(u.shape, dtype=bool)
    kinds = pattern[:, None, None]
    out |= (kinds == 1) & (np.floor(2 * fv) % 2 == 1)
    out |= (kinds == 2) & (np.floor(2 * fu) % 2 == 1)
    out |= (kinds == 3) & (((fu % 1.0) - 0.5) ** 2 + ((fv % 1.0) - 0.5) ** 2 <= 0.3 ** 2)
    out |= (kinds == 4) & ((np.floor(fu) + np.floor(fv)) % 2 == 1)
    out |= (kinds == 5) & (np.floor(fu + fv) % 2 == 1)
    return out


def render_rich(category: np.ndarray, a: dict, image_size: int, rng: np.random.Generator,
                base_masks: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Render items of the rich appearance as uint8 [n, S, S, 3] (``a``: :func:`draw_rich_attributes`;
    ``base_masks``: the simple shapes at the lookup resolution, ``silhouette_masks(MASK_RES)``)."""
    category = np.asarray(category, dtype=np.int64)
    n, S = category.shape[0], image_size
    if out is None:
        out = np.empty((n, S, S, 3), dtype=np.uint8)
    masks = rich_silhouettes(base_masks)
    res = masks.shape[-1]
    c = (np.arange(S, dtype=np.float64) + 0.5) / S
    py, px = np.meshgrid(c, c, indexing="ij")
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, min(lo + _CHUNK, n))
        m = sl.stop - lo
        # garment coordinates of every pixel: undo translation, rotation and scale (and mirror)
        cos, sin = np.cos(a["rotation"][sl])[:, None, None], np.sin(a["rotation"][sl])[:, None, None]
        dx, dy = px[None] - a["cx"][sl, None, None], py[None] - a["cy"][sl, None, None]
        s = a["scale"][sl, None, None]
        u = (cos * dx + sin * dy) / s + 0.5
        v = (-sin * dx + cos * dy) / s + 0.5
        u = np.where(a["mirror"][sl, None, None], 1.0 - u, u)
        inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
        iu = np.clip((u * res).astype(np.int64), 0, res - 1)
        iv = np.clip((v * res).astype(np.int64), 0, res - 1)
        garment = inside & masks[category[sl, None, None], a["shape"][sl, None, None], iv, iu]
        second = garment & _pattern_code(a["pattern"][sl], u, v, a["frequency"][sl], a["phase"][sl])

        img = np.broadcast_to(a["background"][sl, None, None, None], (m, S, S, 3)).copy()
        for b in range(a["blob_on"].shape[1]):   # clutter: blobs in the garments' hues
            xy, r = a["blob_xy"][sl, b], a["blob_r"][sl, b]
            blob = (((px[None] - xy[:, 0, None, None]) / r[:, 0, None, None]) ** 2
                    + ((py[None] - xy[:, 1, None, None]) / r[:, 1, None, None]) ** 2 <= 1.0)
            blob &= a["blob_on"][sl, b, None, None]
            colour = RICH_PALETTE[a["blob_colour"][sl, b]][:, None, None, :]
            img = np.where(blob[..., None], colour, img)
        rgb = np.clip(RICH_PALETTE[a["colour"][sl]] + a["hue_jitter"][sl], 0, 255)
        luma = rgb @ np.array([0.299, 0.587, 0.114])
        shade = rgb * 0.5 + np.where(luma < 90, 120.0, 0.0)[:, None]
        img = np.where(garment[..., None], rgb[:, None, None, :], img)
        img = np.where(second[..., None], shade[:, None, None, :], img)
        box = a["occ_box"][sl]
        occ = (a["occlude"][sl, None, None]
               & (px[None] >= box[:, 0, None, None]) & (px[None] <= box[:, 0, None, None] + box[:, 2, None, None])
               & (py[None] >= box[:, 1, None, None]) & (py[None] <= box[:, 1, None, None] + box[:, 3, None, None]))
        img = np.where(occ[..., None], a["occ_grey"][sl, None, None, None], img)
        img = img * (a["brightness"][sl, None] * a["cast"][sl])[:, None, None, :]
        img += rng.normal(0, RICH_PIXEL_NOISE, img.shape)
        out[sl] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out
