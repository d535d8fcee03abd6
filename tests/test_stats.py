"""fndkit.results.stats: closed forms, reference implementations and simulated designs."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats as sps

from fndkit.results.stats import (Comparison, adjust, compare, compare_frames, gain_share, judge, mde,
                                  power_table, summarize, variance_components)


def simulate(rng, n_seeds, users, effect, sd_between, sd_within, vary_users=True):
    """Per-user paired differences of a nested design: d_su = effect + b_s + e_su."""
    rows = []
    for s in range(n_seeds):
        n = users + (int(rng.integers(-5, 6)) if vary_users else 0)
        b = rng.normal(0.0, sd_between)
        d = effect + b + rng.normal(0.0, sd_within, n)
        rows.append(pd.DataFrame({"seed": s, "user": np.arange(n) + 1000 * s, "diff": d}))
    return pd.concat(rows, ignore_index=True)


def test_known_difference_recovered():
    rng = np.random.default_rng(0)
    diffs = simulate(rng, 10, 40, effect=0.02, sd_between=0.005, sd_within=0.06)
    c = compare(diffs)
    se = math.sqrt(0.005 ** 2 / 10 + 0.06 ** 2 / 400)
    assert abs(c.effect - 0.02) < 3 * se
    assert c.ci_low < 0.02 < c.ci_high
    assert c.n_seeds == 10 and c.n_users == len(diffs)
    # the effect is the mean of the seed means, not the pooled user mean
    assert c.effect == pytest.approx(diffs.groupby("seed")["diff"].mean().mean())


def test_p_and_interval_are_the_seed_level_t_test():
    rng = np.random.default_rng(1)
    diffs = simulate(rng, 5, 40, effect=0.5, sd_between=0.6, sd_within=4.0)
    c = compare(diffs)
    seed_means = diffs.groupby("seed")["diff"].mean().to_numpy()
    ref = sps.ttest_1samp(seed_means, 0.0)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = sps.t.interval(0.95, 4, loc=seed_means.mean(), scale=sps.sem(seed_means))
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi), rel=1e-9)


def _pooled_user_interval(diffs):
    d = diffs["diff"].to_numpy()
    half = sps.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return d.mean() - half, d.mean() + half


@pytest.mark.parametrize("sd_between,sd_within", [(1.0, 2.0), (0.5, 6.0)])
def test_interval_covers_near_95_percent(sd_between, sd_within):
    rng = np.random.default_rng(2)
    covered = pooled_covered = 0
    reps = 200
    for _ in range(reps):
        diffs = simulate(rng, 5, 40, effect=0.7, sd_between=sd_between, sd_within=sd_within)
        c = compare(diffs, n_boot=200)
        covered += c.ci_low <= 0.7 <= c.ci_high
        lo, hi = _pooled_user_interval(diffs)
        pooled_covered += lo <= 0.7 <= hi
    assert 0.88 <= covered / reps <= 0.99
    if sd_between == 1.0:
        # the check has teeth: users pooled over seeds ignore run-to-run variance and under-cover
        assert pooled_covered / reps < 0.75


def test_single_seed_is_a_user_bootstrap_of_that_run():
    rng = np.random.default_rng(3)
    covered, reps = 0, 200
    for i in range(reps):
        run_mean = 0.7 + rng.normal(0.0, 1.0)  # the run's own mean: what one seed can speak about
        d = run_mean + rng.normal(0.0, 5.0, 40)
        c = compare(pd.DataFrame({"seed": 7, "user": np.arange(40), "diff": d}), n_boot=200, seed=i)
        covered += c.ci_low <= run_mean <= c.ci_high
        assert math.isnan(c.p) and c.n_seeds == 1
        assert c.mde == pytest.approx(2.8016 * d.std(ddof=1) / math.sqrt(40), rel=1e-3)
    assert 0.88 <= covered / reps <= 0.99
    assert judge(c) == "single seed: not a verdict"
    assert judge(c, paper_effect=0.7) == "single seed: not a verdict"
    assert math.isnan(adjust([c])[0].q)


def test_single_seed_bootstrap_is_seeded_and_reproducible():
    d = pd.DataFrame({"seed": 0, "user": range(30), "diff": np.linspace(-1, 2, 30)})
    assert compare(d, n_boot=500, seed=4) == compare(d, n_boot=500, seed=4)
    assert compare(d, n_boot=500, seed=4).ci_low != compare(d, n_boot=500, seed=5).ci_low


def test_mde_closed_form_z():
    got = mde(0.8, 6.5, 10, 40, test="z")
    want = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * math.sqrt(0.8 ** 2 / 10 + 6.5 ** 2 / 400)
    assert got == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(2.80 * math.sqrt(0.064 + 0.105625), rel=1e-3)


@pytest.mark.parametrize("n_seeds", [2, 3, 5, 10, 20])
def test_mde_t_matches_noncentral_t_reference(n_seeds):
    df = n_seeds - 1
    crit = sps.t.ppf(0.975, df)
    # the far (lower) tail underflows to NaN for large noncentralities: it is 0 there
    def power(x):
        return sps.nct.sf(crit, df, x) + np.nan_to_num(sps.nct.cdf(-crit, df, x)) - 0.8
    nc = optimize.brentq(power, 0.0, 50.0)
    se = math.sqrt(0.5 ** 2 / n_seeds + 5.3 ** 2 / (n_seeds * 40))
    assert mde(0.5, 5.3, n_seeds, 40) == pytest.approx(nc * se, rel=1e-6)
    assert mde(0.5, 5.3, n_seeds, 40) > mde(0.5, 5.3, n_seeds, 40, test="z")
    assert mde(0.5, 5.3, 1, 40) == math.inf


def test_mde_has_80_percent_power_by_simulation():
    rng = np.random.default_rng(5)
    sb, sw, s, u = 0.6, 5.0, 5, 40
    effect = mde(sb, sw, s, u)
    seed_means = effect + rng.normal(0, sb, (4000, s)) + rng.normal(0, sw / math.sqrt(u), (4000, s))
    p = sps.ttest_1samp(seed_means, 0.0, axis=1).pvalue
    assert 0.77 <= np.mean(p < 0.05) <= 0.83


def test_mde_shrinks_as_one_over_root_seeds_when_between_dominates():
    assert mde(1.0, 0.0, 4, 40, test="z") / mde(1.0, 0.0, 16, 40, test="z") == pytest.approx(2.0, rel=1e-12)
    ratio = mde(1.0, 0.1, 4, 40, test="z") / mde(1.0, 0.1, 16, 40, test="z")
    assert ratio == pytest.approx(2.0, rel=1e-3)
    # more users per seed cannot buy what seeds would: between-seed variance stays
    assert mde(1.0, 0.1, 4, 4000, test="z") == pytest.approx(mde(1.0, 0.1, 4, 40, test="z"), rel=1e-3)


def test_mde_bad_input_names_the_value():
    with pytest.raises(ValueError, match="n_seeds=0"):
        mde(0.5, 5.0, 0, 40)
    with pytest.raises(ValueError, match="sd_within=-1"):
        mde(0.5, -1, 3, 40)
    with pytest.raises(ValueError, match="test='w'"):
        mde(0.5, 5.0, 3, 40, test="w")


def test_power_table():
    table = power_table(0.3, 5.3, 40)
    assert table["seeds"].tolist() == [1, 3, 5, 10, 20]
    assert table["users"].tolist() == [40, 120, 200, 400, 800]
    assert table["mde_t"].iloc[0] == math.inf
    assert np.all(np.diff(table["mde_z"]) < 0) and np.all(np.diff(table["mde_t"].iloc[1:]) < 0)
    assert table["mde_z"].iloc[3] == pytest.approx(mde(0.3, 5.3, 10, 40, test="z"))
    assert table["se"].iloc[3] == pytest.approx(math.sqrt(0.09 / 10 + 5.3 ** 2 / 400))


def test_variance_components_recovered():
    rng = np.random.default_rng(6)
    parts = variance_components(simulate(rng, 200, 100, 0.0, 0.8, 5.0, vary_users=False))
    assert parts["sd_within"] == pytest.approx(5.0, rel=0.03)
    assert parts["sd_between"] == pytest.approx(0.8, rel=0.15)
    assert parts["users_per_seed"] == pytest.approx(100)
    uneven = pd.DataFrame({"seed": [0] * 20 + [1] * 60, "user": range(80), "diff": rng.normal(0, 1, 80)})
    assert variance_components(uneven)["users_per_seed"] == pytest.approx(30.0)   # harmonic mean


def test_bh_hand_computed():
    # m = 4 tested: 0.004·4/1 = 0.016; 0.03·4/2 = 0.06; 0.045·4/3 = 0.06; 0.30·4/4 = 0.30
    family = [Comparison(effect=0, ci_low=0, ci_high=0, p=p, n_seeds=3, n_users=120, mde=1)
              for p in (0.045, math.nan, 0.30, 0.004, 0.03)]
    q = [c.q for c in adjust(family)]
    assert q[0] == pytest.approx(0.06) and q[4] == pytest.approx(0.06)
    assert q[3] == pytest.approx(0.016) and q[2] == pytest.approx(0.30)
    assert math.isnan(q[1])
    # two raw p < 0.05 are not significant after BH
    assert sum(c.p < 0.05 for c in family) == 3
    assert sum(x < 0.05 for x in q if not math.isnan(x)) == 1


def test_judge_supported_and_contradicted_on_clear_cases():
    rng = np.random.default_rng(7)
    up = adjust([compare(simulate(rng, 10, 40, 3.0, 0.5, 5.0))])[0]
    down = adjust([compare(simulate(rng, 10, 40, -3.0, 0.5, 5.0))])[0]
    assert judge(up, +1, paper_effect=0.7) == "supported"
    assert judge(up, -1) == "contradicted"
    assert judge(down, +1, paper_effect=0.7) == "contradicted"
    assert judge(down, -1) == "supported"


def test_judge_underpowered_never_says_no_difference():
    rng = np.random.default_rng(8)
    verdicts = []
    for _ in range(60):
        c = compare(simulate(rng, 3, 40, 0.7, 0.8, 6.0))   # MDE ≈ 5 points against a 0.7 claim
        assert c.mde > 0.7
        verdicts.append(judge(adjust([c])[0], +1, paper_effect=0.7))
    assert not any(v.startswith("no difference") or "not supported" in v for v in verdicts)
    assert any(v.startswith("underpowered (MDE ") and v.endswith("> claimed effect 0.7)") for v in verdicts)


def test_judge_rules_on_constructed_comparisons():
    base = dict(effect=0.1, ci_low=-0.2, ci_high=0.4, p=0.5, n_seeds=10, n_users=400, mde=0.5)
    powered = Comparison(**base)
    assert judge(powered, paper_effect=0.7) == "no difference larger than 0.4 shown"
    assert judge(powered) == "no difference larger than 0.4 shown"
    assert judge(Comparison(**{**base, "mde": 0.9}), paper_effect=-0.7) == \
        "underpowered (MDE 0.9 > claimed effect 0.7)"
    # interval clear of 0 but the family's q is not: no claim either way
    clear = Comparison(**{**base, "ci_low": 0.05, "p": 0.01, "q": 0.2})
    assert judge(clear) == "no difference larger than 0.4 shown"
    # never adjusted: judged on its own p
    assert judge(Comparison(**{**base, "ci_low": 0.05, "p": 0.01})) == "supported"
    with pytest.raises(ValueError, match="expected_sign=0"):
        judge(powered, expected_sign=0)


def _frame(rows):
    return pd.DataFrame(rows, columns=["seed", "user", "value"])


def test_compare_frames_pairs_by_seed_and_user():
    a = _frame([(0, "u1", 0.9), (0, "u2", 0.8), (0, "u3", 0.7), (1, "u1", 0.6), (1, "u9", 0.5)])
    b = _frame([(1, "u1", 0.4), (0, "u3", 0.75), (0, "u1", 0.85), (0, "u2", 0.6), (1, "u7", 0.1)])
    c = compare_frames(a, b)
    # seed 0: (0.05 + 0.2 - 0.05) / 3; seed 1: 0.2 (u9, u7 unpaired, dropped)
    assert c.effect == pytest.approx(((0.05 + 0.2 - 0.05) / 3 + 0.2) / 2)
    assert c.n_seeds == 2 and c.n_users == 4


def test_compare_frames_refuses_an_empty_pairing():
    a = _frame([(0, "u1", 0.9), (0, "u2", 0.8)])
    b = _frame([(1, "u1", 0.9), (1, "u2", 0.8)])
    with pytest.raises(ValueError, match=r"compare_frames: empty pairing .*seeds \[0\].*seeds \[1\]"):
        compare_frames(a, b)


def test_bad_frames_are_refused_by_name():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['diff'\]"):
        compare(pd.DataFrame({"seed": [0], "user": [1], "value": [0.1]}))
    with pytest.raises(ValueError, match=r"\(seed, user\) pairs appear more than once"):
        compare(pd.DataFrame({"seed": [0, 0], "user": [1, 1], "diff": [0.1, 0.2]}))
    with pytest.raises(ValueError, match="non-finite 'diff'"):
        compare(pd.DataFrame({"seed": [0, 1], "user": [1, 1], "diff": [0.1, np.nan]}))
    with pytest.raises(ValueError, match="n_boot=5"):
        compare(pd.DataFrame({"seed": [0], "user": [1], "diff": [0.1]}), n_boot=5)


def test_gain_share():
    assert gain_share(0.90, 0.80, 1.00) == pytest.approx(0.5)
    assert gain_share(0.78, 0.80, 0.90) == pytest.approx(-0.2)
    assert math.isnan(gain_share(0.9, 0.8, 0.8))
    assert math.isnan(gain_share(0.9, 0.8, float("nan")))


def test_summarize_matches_a_t_interval_per_group():
    values = pd.DataFrame({
        "method": ["fnd"] * 3 + ["npair"] * 3 + ["bpr"],
        "protocol": ["hard"] * 7,
        "seed": [0, 1, 2, 0, 1, 2, 0],
        "value": [0.865, 0.856, 0.849, 0.846, 0.847, 0.850, 0.80],
    })
    out = summarize(values).set_index("method")
    fnd = np.array([0.865, 0.856, 0.849])
    lo, hi = sps.t.interval(0.95, 2, loc=fnd.mean(), scale=sps.sem(fnd))
    assert out.loc["fnd", "mean"] == pytest.approx(fnd.mean())
    assert out.loc["fnd", "sd"] == pytest.approx(fnd.std(ddof=1))
    assert (out.loc["fnd", "ci_low"], out.loc["fnd", "ci_high"]) == pytest.approx((lo, hi))
    assert out.loc["npair", "n"] == 3 and out.loc["bpr", "n"] == 1
    assert math.isnan(out.loc["bpr", "ci_low"]) and math.isnan(out.loc["bpr", "sd"])
    assert list(out.reset_index().columns) == ["method", "protocol", "mean", "sd", "ci_low", "ci_high", "n"]
    with pytest.raises(ValueError, match="seeds within a group appear more than once"):
        summarize(pd.concat([values, values.iloc[:1]]))


def test_import_is_light():
    code = ("import sys, fndkit.results.stats; "
            "print(sorted(m for m in ('torch', 'scipy.stats') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
