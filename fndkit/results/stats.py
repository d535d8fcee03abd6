"""Statistics over seeds: effect, 95% interval, seed-level test, BH, minimum detectable effect, verdict.

**The design.** A comparison is one method ``a`` against its reference ``b`` on one list (``test``
or ``test_clean``) and protocol (random or hard). The unit of replication is the *seed*: one
training run of each method (and, if the plan varies it, one draw of data and candidates). Users
are nested within a seed: each seed contributes one per-user paired difference
``d_su = AUC_a(s, u) − AUC_b(s, u)`` per test user. The model behind every number here is

    d_su = μ + b_s + e_su,   Var(b_s) = σ²_seed (run-to-run training variance),
                             Var(e_su) = σ²_user (per-user spread within a run).

A per-user test on one run (or on users pooled over seeds) says whether *that run* differs; the
method differs only if the difference survives the run-to-run variance, which the README's lab
measures at 0.3–0.8 AUC points. So:

* **Effect**: the mean over seeds of the per-seed mean difference (each run weighs the same,
  whatever its number of users) — the estimate of μ.
* **Interval (S ≥ 2 seeds)**: the seed-level t interval, ``effect ± t(0.975, S−1) · sd(seed
  means) / √S``. This is the random-intercept mixed model's REML interval for μ in a balanced
  design (same users per seed), in closed form: ``Var(seed mean) = σ²_seed + σ²_user/U`` carries
  both levels, and its S − 1 degrees of freedom are the honest ones. It is chosen over the
  two-stage bootstrap (resample seeds, then users within each seed) because that bootstrap counts
  the within-seed variance twice (the seed means already carry it; Davison & Hinkley 1997, §3.8)
  and its percentiles use the normal, not t(S−1): its coverage depends on how the variance splits.
  Measured (``/tmp`` simulation, 400 designs each, 40 users per seed, normal data): the two-stage
  percentile bootstrap covered 0.84 (3 seeds, σ_seed 1, σ_user 2) … 0.99 (10 seeds, σ_seed 0.5,
  σ_user 6); resampling seeds only, 0.72–0.94; users pooled over seeds with a t interval, 0.48
  when σ_seed matters; this interval 0.94–0.97 in every case.
* **Interval (one seed)**: the percentile interval of a user-level bootstrap within that run
  (``n_boot`` resamples of its users, seeded). It is an interval for *that run's* mean
  difference, not for the method: the between-seed variance is not seen.
* **p**: the seed-level paired test — a one-sample t-test on the S per-seed mean differences
  (methods trained with the same seed form the pair). A t-test, not Wilcoxon's signed-rank test,
  because the signed-rank test's smallest two-sided p over S seeds is 2/2^S (0.25 at 3 seeds,
  0.0625 at 5), so it cannot reject at 5% below 6 seeds whatever the data; each seed mean averages
  ~40 users, so it is close to normal. The t-test and the interval agree: the interval excludes 0
  exactly when p < 0.05. NaN with one seed (no degrees of freedom).
* **MDE** (80% power, two-sided 5%): with ``SE = sqrt(σ²_seed/S + σ²_user/(S·U))`` (U: harmonic mean
  of users per seed) the z approximation is ``(z(0.975) + z(0.8)) · SE = 2.80 · SE``. The test
  actually run is the t-test with S − 1 degrees of freedom, so :func:`mde` (default ``test="t"``)
  solves the exact power equation of that test (noncentral t, noncentrality MDE / SE):
  3.15 · SE at 10 seeds, 3.76 at 5, 5.65 at 3, 16.3 at 2 (≈ t(0.975, S−1) + t(0.8, S−1)). In
  :func:`compare` σ_seed and σ_user are the observed ones (ANOVA estimates: pooled within-seed
  variance; between = variance of seed means − σ²_user/U, floored at 0), so with few seeds the MDE
  is itself noisy. With one seed: ``2.80 · σ_user / √U``, what that run's users could show about
  that run — a lower bound for the method's MDE.
* **BH** over the family of comparisons that have a p (:func:`adjust`); **verdicts** by fixed
  rules (:func:`judge`).

**Caveat: crossed users.** If every seed evaluates the *same* test users (data seed fixed, only
the training seed varies), the user effects are common to all seed means and cancel out of
their spread: the interval then holds for these users (training variance and user×run noise),
not for a new sample of users. Varying the data seed with the training seed nests users in seeds
and makes it reach new users.

Pure numpy / pandas; scipy.special for the t and noncentral-t distributions; scipy.stats only
inside :func:`adjust` (it takes ~0.7 s to import on the 2-core box).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy import special

Z_975 = float(special.ndtri(0.975))
_BOOT_CELLS = 2_000_000  # bootstrap draws held in memory at once (ints), to vectorize in chunks


@dataclass(frozen=True)
class Comparison:
    """One method vs its reference on one list and protocol, over seeds (see the module docstring).

    ``effect``, ``ci_low``, ``ci_high``, ``mde``, ``sd_between`` and ``sd_within`` are in the
    units of the differences given (AUC fractions or points, as passed). ``n_users`` counts
    user-observations (a user seen under two seeds counts twice).
    """

    effect: float
    ci_low: float
    ci_high: float
    p: float
    n_seeds: int
    n_users: int
    mde: float
    q: float = math.nan
    verdict: str = ""
    sd_between: float = math.nan   # estimated σ_seed (NaN with one seed)
    sd_within: float = math.nan    # estimated σ_user (pooled within seeds)

    def to_dict(self) -> dict:
        return asdict(self)


def _require_columns(frame, columns: tuple[str, ...], where: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame with columns {list(columns)}, "
                         f"got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; the frame has {list(frame.columns)} "
                         f"and needs {list(columns)}")


def _finite_values(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = frame.loc[bad].head(3).to_dict("records")
        raise ValueError(f"{where}: {int(bad.sum())} non-finite {column!r} value(s), e.g. {rows}; "
                         f"drop the users without a metric before comparing")
    return values


def _no_duplicates(frame: pd.DataFrame, keys: list[str], where: str, what: str) -> None:
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        rows = frame.loc[dup, keys].drop_duplicates().head(3).to_dict("records")
        raise ValueError(f"{where}: {what} appear more than once, e.g. {rows}; give one row per "
                         f"{tuple(keys)}")


def _t_quantile(p: float, df) -> np.ndarray:
    return special.stdtrit(df, p)


def _seed_t_test(seed_means: np.ndarray) -> tuple[float, float, float]:
    """(interval low, interval high, two-sided p) of the one-sample t-test on the seed means."""
    n = seed_means.size
    mean = float(seed_means.mean())
    sd = float(seed_means.std(ddof=1))
    if sd == 0.0:  # every seed gave the same mean: no spread to test against
        return mean, mean, (1.0 if mean == 0.0 else 0.0)
    se = sd / math.sqrt(n)
    half = float(_t_quantile(0.975, n - 1)) * se
    p = float(2.0 * special.stdtr(n - 1, -abs(mean) / se))
    return mean - half, mean + half, p


def _bootstrap_mean_interval(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile 95% interval of the mean of ``values`` over ``n_boot`` resamples (vectorized)."""
    rng = np.random.default_rng(seed)
    n = values.size
    means = np.empty(n_boot)
    chunk = max(1, _BOOT_CELLS // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def variance_components(diffs: pd.DataFrame) -> dict:
    """ANOVA estimates of the two levels from ``diffs`` (columns seed, user, diff).

    Returns ``sd_within`` (pooled within-seed sd; NaN if no seed has two users), ``sd_between``
    (sqrt of variance of seed means − σ²_within/U, floored at 0; NaN with one seed), ``users_per_seed``
    (harmonic mean: the U that makes σ²_within/U the seed means' share of within-seed noise),
    ``seed_means`` (array, sorted by seed) and ``n_seeds``.
    """
    _require_columns(diffs, ("seed", "user", "diff"), "variance_components")
    d = _finite_values(diffs, "diff", "variance_components")
    codes, _ = pd.factorize(diffs["seed"], sort=True)
    counts = np.bincount(codes)
    means = np.bincount(codes, weights=d) / counts
    ss = np.bincount(codes, weights=(d - means[codes]) ** 2)
    df_within = int((counts - 1).sum())
    var_within = float(ss.sum() / df_within) if df_within > 0 else math.nan
    users = float(counts.size / np.sum(1.0 / counts))
    if counts.size >= 2:
        share = 0.0 if math.isnan(var_within) else var_within / users
        var_between = max(0.0, float(means.var(ddof=1)) - share)
        sd_between = math.sqrt(var_between)
    else:
        sd_between = math.nan
    return {"sd_within": math.sqrt(var_within) if not math.isnan(var_within) else math.nan,
            "sd_between": sd_between, "users_per_seed": users, "seed_means": means,
            "n_seeds": int(counts.size)}


def compare(diffs: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Effect, 95% interval, seed-level p and MDE of per-user paired differences over seeds.

    ``diffs``: columns ``seed``, ``user``, ``diff`` (AUC of the method − AUC of the reference for
    that user in that seed's run); users may differ between seeds, one row per (seed, user).
    ``n_boot`` and ``seed`` drive the user-level bootstrap used only when there is one seed. The
    design and why: the module docstring.
    """
    _require_columns(diffs, ("seed", "user", "diff"), "compare")
    if len(diffs) == 0:
        raise ValueError("compare: diffs is empty; give one row per (seed, user) with its paired "
                         "difference")
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 100:
        raise ValueError(f"compare: n_boot={n_boot!r} must be an integer >= 100 (2000 for a report)")
    _no_duplicates(diffs, ["seed", "user"], "compare", "(seed, user) pairs")
    parts = variance_components(diffs)
    seed_means = parts["seed_means"]
    n_seeds = parts["n_seeds"]
    sd_within, users = parts["sd_within"], parts["users_per_seed"]
    effect = float(seed_means.mean())
    if n_seeds == 1:
        d = diffs["diff"].to_numpy(dtype=float)
        low, high = _bootstrap_mean_interval(d, int(n_boot), int(seed))
        p = math.nan
        run_mde = mde(0.0, 0.0 if math.isnan(sd_within) else sd_within, 1, users, test="z")
    else:
        low, high, p = _seed_t_test(seed_means)
        # the seed means' spread holds both levels; if no seed has two users it is all there is
        between = parts["sd_between"]
        if math.isnan(sd_within):
            between, within = float(seed_means.std(ddof=1)), 0.0
        else:
            within = sd_within
        run_mde = mde(between, within, n_seeds, users)
    return Comparison(effect=effect, ci_low=low, ci_high=high, p=p, n_seeds=n_seeds,
                      n_users=int(len(diffs)), mde=run_mde, sd_between=parts["sd_between"],
                      sd_within=sd_within)


def paired_differences(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Columns seed, user, diff = a.value − b.value over the (seed, user) pairs in both frames."""
    for name, frame in (("a", a), ("b", b)):
        _require_columns(frame, ("seed", "user", "value"), f"compare_frames ({name})")
        _finite_values(frame, "value", f"compare_frames ({name})")
        _no_duplicates(frame, ["seed", "user"], f"compare_frames ({name})", "(seed, user) pairs")
    merged = a[["seed", "user", "value"]].merge(b[["seed", "user", "value"]], on=["seed", "user"],
                                                suffixes=("_a", "_b"), how="inner")
    if merged.empty:
        raise ValueError(f"compare_frames: empty pairing — no (seed, user) is in both a and b "
                         f"(a: seeds {sorted(pd.unique(a['seed']).tolist())}, {len(a)} rows; b: seeds "
                         f"{sorted(pd.unique(b['seed']).tolist())}, {len(b)} rows); pair runs of the "
                         f"same seeds evaluated on the same users")
    merged["diff"] = merged["value_a"].astype(float) - merged["value_b"].astype(float)
    return merged[["seed", "user", "diff"]]


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, **kw) -> Comparison:
    """:func:`compare` of method ``a`` against reference ``b`` (columns seed, user, value: per-user
    AUC), paired on (seed, user); rows of one frame without a partner in the other are dropped."""
    return compare(paired_differences(a, b), **kw)


def adjust(comparisons: list[Comparison]) -> list[Comparison]:
    """Benjamini–Hochberg q values over the family (``scipy.stats.false_discovery_control``).

    The family is the comparisons that have a p: a NaN p (one seed: no test) keeps q NaN and does
    not count in the family's size. Returns new Comparisons in the same order.
    """
    comparisons = list(comparisons)
    p = np.array([c.p for c in comparisons], dtype=float)
    tested = np.isfinite(p)
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ValueError(f"adjust: p values must lie in [0, 1], got {p[tested].tolist()}")
    q = np.full(p.shape, math.nan)
    if tested.any():
        from scipy.stats import false_discovery_control  # slow import: only here
        q[tested] = false_discovery_control(p[tested], method="bh")
    return [replace(c, q=float(qc)) for c, qc in zip(comparisons, q)]


def _check_nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")
    return float(value)


def _t_power(nc: float, df: int, crit: float) -> float:
    """Power of the two-sided t-test: P(|T'| > crit), T' noncentral t(df, nc); the far tail
    underflows to NaN in scipy for large nc and is then 0."""
    upper = 1.0 - np.nan_to_num(special.nctdtr(df, nc, crit), nan=0.0)
    lower = np.nan_to_num(special.nctdtr(df, nc, -crit), nan=0.0)
    return float(upper + lower)


def mde(sd_between_seeds: float, sd_within: float, n_seeds: int, users_per_seed: float,
        alpha: float = 0.05, power: float = 0.8, *, test: str = "t") -> float:
    """Minimum detectable effect of the seed-level test (two-sided ``alpha``, ``power``).

    ``SE = sqrt(sd_between_seeds²/n_seeds + sd_within²/(n_seeds·users_per_seed))``.
    ``test="z"``: ``(z(1−alpha/2) + z(power)) · SE`` (2.80 · SE at 5% / 80%), the design's value with
    known variances. ``test="t"`` (default; the test :func:`compare` runs): the effect at which the
    one-sample t-test on ``n_seeds`` seed means (df n_seeds − 1) has the power asked, solved
    exactly with the noncentral t; ``inf`` with one seed (no seed-level test exists).
    """
    sb = _check_nonnegative("sd_between_seeds", sd_between_seeds)
    sw = _check_nonnegative("sd_within", sd_within)
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, (int, np.integer)) or n_seeds < 1:
        raise ValueError(f"n_seeds={n_seeds!r} must be an integer >= 1")
    if isinstance(users_per_seed, bool) or not isinstance(users_per_seed, (int, float, np.integer, np.floating)) \
            or not math.isfinite(users_per_seed) or users_per_seed <= 0:
        raise ValueError(f"users_per_seed={users_per_seed!r} must be a finite number > 0")
    for name, value in (("alpha", alpha), ("power", power)):
        if not (isinstance(value, (int, float)) and 0 < value < 1):
            raise ValueError(f"{name}={value!r} must lie strictly between 0 and 1")
    if test not in ("t", "z"):
        raise ValueError(f"test={test!r} is unknown; choose 't' (the seed-level t-test) or 'z'")
    se = math.sqrt(sb ** 2 / n_seeds + sw ** 2 / (n_seeds * users_per_seed))
    if test == "z":
        return (float(special.ndtri(1 - alpha / 2)) + float(special.ndtri(power))) * se
    if n_seeds < 2:
        return math.inf
    if se == 0.0:
        return 0.0
    df = int(n_seeds) - 1
    crit = float(_t_quantile(1 - alpha / 2, df))
    # power grows with the noncentrality: bracket, then bisect
    low, high = 0.0, 1.0
    while _t_power(high, df, crit) < power:
        low, high = high, high * 2.0
        if high > 1e6:
            return math.inf
    for _ in range(100):
        mid = 0.5 * (low + high)
        if _t_power(mid, df, crit) < power:
            low = mid
        else:
            high = mid
        if high - low < 1e-10 * high:
            break
    # the noncentrality of a one-sample t-test is effect / SE(mean) with SE = sd(seed mean)/sqrt(S)
    return 0.5 * (low + high) * se


def power_table(sd_between: float, sd_within: float, users_per_seed: float,
                seeds=(1, 3, 5, 10, 20)) -> pd.DataFrame:
    """MDE (80% power, two-sided 5%) per number of seeds: columns seeds, users (total), se,
    mde_z (2.80 · SE, known variances) and mde_t (the seed-level t-test; inf at one seed)."""
    rows = []
    for s in seeds:
        se = mde(sd_between, sd_within, s, users_per_seed, test="z") / (Z_975 + float(special.ndtri(0.8)))
        rows.append({"seeds": int(s), "users": float(s * users_per_seed), "se": se,
                     "mde_z": mde(sd_between, sd_within, s, users_per_seed, test="z"),
                     "mde_t": mde(sd_between, sd_within, s, users_per_seed, test="t")})
    return pd.DataFrame(rows)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def judge(c: Comparison, expected_sign: int = +1, paper_effect: float | None = None,
          level: float = 0.05, scale: float = 1.0, unit: str = "") -> str:
    """Verdict words that say what the numbers of ``c`` allow. Rules, first match wins:

    1. ``n_seeds < 2`` → ``"single seed: not a verdict"`` (the run-to-run variance is unseen).
    2. The interval excludes 0 on the ``expected_sign`` side (``ci_low > 0`` for +1, ``ci_high < 0``
       for −1) and the family's q < ``level`` → ``"supported"``.
    3. The interval excludes 0 on the other side and q < ``level`` → ``"contradicted"``.
    4. A ``paper_effect`` is given and the design could not have seen it (``mde > |paper_effect|``,
       or the MDE is unknown) → ``"underpowered (MDE X > claimed effect Y)"``.
    5. Otherwise → ``"no difference larger than X shown"``, X = max(|ci_low|, |ci_high|): the
       largest difference the interval leaves open (with a paper effect: the design could have
       seen it; without one, X itself says how narrow the interval is).

    q is the BH-adjusted p from :func:`adjust`; a comparison never adjusted (q NaN) is judged on its
    own p (a family of one). "Not supported" is never said: a non-significant test either had the
    power (rule 5, with the bound) or did not (rule 4). Numbers in the words are shown times
    ``scale`` with ``unit`` (e.g. 100 and " pts" for AUC points).
    """
    show = lambda x: f"{_fmt(x * scale)}{unit}"  # noqa: E731
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign={expected_sign!r} must be +1 (method above its reference) "
                         f"or -1 (below)")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level={level!r} must lie strictly between 0 and 1")
    if paper_effect is not None and not (isinstance(paper_effect, (int, float)) and math.isfinite(paper_effect)):
        raise ValueError(f"paper_effect={paper_effect!r} must be a finite number (in the units of the "
                         f"differences) or None")
    if c.n_seeds < 2:
        return "single seed: not a verdict"
    q = c.q if not math.isnan(c.q) else c.p
    significant = (not math.isnan(q)) and q < level
    above, below = c.ci_low > 0, c.ci_high < 0
    expected_side, other_side = (above, below) if expected_sign == 1 else (below, above)
    if significant and expected_side:
        return "supported"
    if significant and other_side:
        return "contradicted"
    if paper_effect is not None and not (c.mde <= abs(paper_effect)):
        return f"underpowered (MDE {show(c.mde)} > claimed effect {show(abs(paper_effect))})"
    return f"no difference larger than {show(max(abs(c.ci_low), abs(c.ci_high)))} shown"


def gain_share(student_method: float, student_ref: float, teacher: float) -> float:
    """Share of the teacher's margin over the reference student that the method transferred:
    ``(method − ref) / (teacher − ref)``; NaN (not inf) when teacher == ref or any input is not
    finite."""
    values = (float(student_method), float(student_ref), float(teacher))
    if not all(math.isfinite(v) for v in values) or values[2] == values[1]:
        return math.nan
    return (values[0] - values[1]) / (values[2] - values[1])


def summarize(values: pd.DataFrame) -> pd.DataFrame:
    """Per group of the columns other than ``seed`` and ``value``: mean over seeds, sd over seeds
    (ddof 1), the 95% t interval over seeds (``ci_low``, ``ci_high``; NaN with one seed) and ``n``
    (seeds). One row per seed in each group; groups keep their first-seen order."""
    _require_columns(values, ("seed", "value"), "summarize")
    if len(values) == 0:
        raise ValueError("summarize: values is empty; give one row per (group, seed) with its value")
    v = _finite_values(values, "value", "summarize")
    keys = [c for c in values.columns if c not in ("seed", "value")]
    _no_duplicates(values, keys + ["seed"], "summarize", "seeds within a group")
    frame = values[keys].copy()
    frame["value"] = v
    if keys:
        grouped = frame.groupby(keys, sort=False, dropna=False)["value"]
        out = grouped.agg(mean="mean", sd="std", n="count").reset_index()
    else:
        out = pd.DataFrame({"mean": [v.mean()], "sd": [v.std(ddof=1) if v.size > 1 else math.nan],
                            "n": [v.size]})
    n = out["n"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        half = np.where(n >= 2, _t_quantile(0.975, np.maximum(n - 1, 1)) * out["sd"].to_numpy()
                        / np.sqrt(n), np.nan)
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    out["n"] = out["n"].astype(int)
    return out[keys + ["mean", "sd", "ci_low", "ci_high", "n"]]
