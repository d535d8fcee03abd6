"""Comparisons on the one results table: claims (method A beats B), gains over a reference and the
share of the teacher's margin a student takes, all with seeds as replicates.

A comparison pairs two stages' per-user test AUCs within each seed's run folder
(:func:`fndkit.results.collect.collect_users`) and hands them to :func:`fndkit.results.stats.compare`:
the effect (mean over seeds of the per-seed mean per-user difference), its 95% interval, the
seed-level p, the minimum detectable effect of the design; Benjamini–Hochberg over the family;
then a verdict that says what the numbers allow.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np
import pandas as pd

from . import stats


class Comparison(NamedTuple):
    """``a`` against ``b`` (stage folders of the same run folders) on ``protocol`` and ``list``."""

    label: str
    a: str
    b: str
    protocol: str = "random"
    list: str = "test"
    sign: int = 1
    paper_effect: float | None = None
    folders: tuple = ()   # only these run folders (e.g. one taste breadth of the lab); () all


def _values(users: pd.DataFrame, stage: str, protocol: str, which: str, folders: tuple = ()) -> pd.DataFrame:
    part = users[(users.stage == stage) & (users.protocol == protocol) & (users.list == which)]
    if folders:
        part = part[part.run_dir.isin([str(f) for f in folders])]
    return part.drop_duplicates(subset=["run_dir", "user"])[["seed", "user", "value"]]


def compare(users: pd.DataFrame, comparisons: Iterable[Comparison], n_boot: int = 2000) -> pd.DataFrame:
    """One row per comparison that has data on both sides: effect, ci_low, ci_high, p, q (BH over
    the rows returned), mde, n_seeds, n_users, verdict."""
    done, rows = [], []
    for c in comparisons:
        a, b = (_values(users, stage, c.protocol, c.list, c.folders) for stage in (c.a, c.b))
        if a.empty or b.empty:
            continue
        try:
            result = stats.compare_frames(a, b, n_boot=n_boot)
        except ValueError:  # no user paired in any seed
            continue
        done.append((c, result))
    adjusted = stats.adjust([r for _, r in done])
    for (c, _), r in zip(done, adjusted):
        verdict = stats.judge(r, expected_sign=c.sign, paper_effect=c.paper_effect)
        rows.append({"comparison": c.label, "a": c.a, "b": c.b, "protocol": c.protocol, "list": c.list,
                     "paper_effect": c.paper_effect, **{k: v for k, v in r.to_dict().items() if k != "verdict"},
                     "verdict": verdict})
    return pd.DataFrame(rows, columns=["comparison", "a", "b", "protocol", "list", "paper_effect", "effect", "ci_low",
                                       "ci_high", "p", "q", "mde", "n_seeds", "n_users", "verdict"])


def stage_means(table: pd.DataFrame, protocol: str = "random", which: str = "test", metric: str = "auc") -> pd.Series:
    """Mean over seeds of each stage's ``metric`` on ``protocol`` / ``which``."""
    part = table[(table.protocol == protocol) & (table.list == which) & (table.metric == metric)]
    return part.groupby("stage")["value"].mean()


def transfer(table: pd.DataFrame, users: pd.DataFrame, reference: str, teacher: str, stages: Iterable[str],
             protocols=("random",), lists=("test", "test_clean"), n_boot: int = 2000) -> pd.DataFrame:
    """Per student stage: its gain over ``reference`` (paired, with interval) and the share of the
    teacher's margin it transfers, (stage − reference) / (teacher − reference), on each list."""
    comps = [Comparison(s, s, reference, p, w) for s in stages for p in protocols for w in lists]
    comps += [Comparison(teacher, teacher, reference, p, w) for p in protocols for w in lists]
    gains = compare(users, comps, n_boot=n_boot)
    if gains.empty:
        return gains
    shares = []
    for r in gains.itertuples():
        means = stage_means(table, r.protocol, r.list)
        if {r.a, reference, teacher} <= set(means.index):
            shares.append(stats.gain_share(means[r.a], means[reference], means[teacher]))
        else:
            shares.append(np.nan)
    return gains.assign(share=shares)
