"""Comparisons on the one results table: claims (method A beats B), gains over a reference and the
share of the teacher's margin a student takes, all with seeds as replicates.

A comparison pairs two stages' per-user test AUCs within each seed's run folder
(:func:`fndkit.results.collect.collect_users`) and hands them to :func:`fndkit.results.stats.compare`:
the effect (mean over seeds of the per-seed mean per-user difference), its 95% interval, the
seed-level p, the minimum detectable effect of the design; Benjamini–Hochberg over the family;
then a verdict that says what the numbers allow.
"""

from __future__ import annotations

import json
from typing import Iterable, NamedTuple

import numpy as np
import pandas as pd

from . import stats


class Comparison(NamedTuple):
    """``a`` against ``b`` on ``protocol`` and ``list``: stage folders, or — with ``experiment`` —
    methods of that experiment (a method's stage may be named per seed: ``student_fnd-seed3``).
    A side run once (a teacher shared by every seed) stands beside each seed of the other."""

    label: str
    a: str
    b: str
    protocol: str = "random"
    list: str = "test"
    sign: int = 1
    paper_effect: float | None = None
    folders: tuple = ()   # only these run folders (e.g. one taste breadth of the lab); () all
    experiment: str = ""
    shown_a: dict | None = None   # only rows whose varied settings are these (e.g. a cold-start strategy)
    shown_b: dict | None = None


def _values(users: pd.DataFrame, c: Comparison, side: str, shown: dict | None = None) -> pd.DataFrame:
    part = users[(users.protocol == c.protocol) & (users.list == c.list)]
    part = part[(part.experiment == c.experiment) & (part.method == side)] if c.experiment else part[part.stage == side]
    if shown is not None:
        part = part[part.shown == json.dumps(shown, sort_keys=True)]
    if c.folders:
        part = part[part.run_dir.isin([str(f) for f in c.folders])]
    return part.drop_duplicates(subset=["seed", "user"])[["seed", "user", "value"]]


def _broadcast(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A side with one seed (a shared teacher) repeated for each seed of the other side."""
    sa, sb = a.seed.nunique(), b.seed.nunique()
    if sa == 1 and sb > 1:
        a = pd.concat([a.assign(seed=s) for s in sorted(b.seed.unique())], ignore_index=True)
    elif sb == 1 and sa > 1:
        b = pd.concat([b.assign(seed=s) for s in sorted(a.seed.unique())], ignore_index=True)
    return a, b


def compare(users: pd.DataFrame, comparisons: Iterable[Comparison], n_boot: int = 2000) -> pd.DataFrame:
    """One row per comparison that has data on both sides: effect, ci_low, ci_high, p, q (BH over
    the rows returned), mde, n_seeds, n_users, verdict."""
    done, rows = [], []
    for c in comparisons:
        a, b = _broadcast(_values(users, c, c.a, c.shown_a), _values(users, c, c.b, c.shown_b))
        if a.empty or b.empty:
            continue
        try:
            result = stats.compare_frames(a, b, n_boot=n_boot)
        except ValueError:  # no user paired in any seed
            continue
        done.append((c, result))
    adjusted = stats.adjust([r for _, r in done])
    for (c, _), r in zip(done, adjusted):
        verdict = stats.judge(r, expected_sign=c.sign, paper_effect=c.paper_effect, scale=100.0, unit=" pts")
        rows.append({"comparison": c.label, "a": c.a, "b": c.b, "protocol": c.protocol, "list": c.list,
                     "paper_effect": c.paper_effect, **{k: v for k, v in r.to_dict().items() if k != "verdict"},
                     "verdict": verdict})
    return pd.DataFrame(rows, columns=["comparison", "a", "b", "protocol", "list", "paper_effect", "effect", "ci_low",
                                       "ci_high", "p", "q", "mde", "n_seeds", "n_users", "verdict"])


def method_means(table: pd.DataFrame, experiment: str, protocol: str = "random", which: str = "test",
                 metric: str = "auc") -> pd.Series:
    """Mean over seeds of each method's ``metric`` in ``experiment`` on ``protocol`` / ``which``."""
    part = table[(table.experiment == experiment) & (table.protocol == protocol) & (table.list == which)
                 & (table.metric == metric)]
    return part.groupby("method")["value"].mean()


def transfer(table: pd.DataFrame, users: pd.DataFrame, experiment: str, reference: str, teacher: str,
             methods: Iterable[str], protocols=("random",), lists=("test", "test_clean"),
             n_boot: int = 2000) -> pd.DataFrame:
    """Per method of ``experiment``: its gain over ``reference`` (paired, with interval) and the
    share of the teacher's margin it transfers, (method − reference) / (teacher − reference), on
    each list; the teacher's own margin first."""
    comps = [Comparison(f"{teacher} − {reference}", teacher, reference, p, w, experiment=experiment)
             for p in protocols for w in lists]
    comps += [Comparison(m, m, reference, p, w, experiment=experiment)
              for m in methods for p in protocols for w in lists]
    gains = compare(users, comps, n_boot=n_boot)
    if gains.empty:
        return gains
    shares = []
    for r in gains.itertuples():
        means = method_means(table, experiment, r.protocol, r.list)
        if {r.a, reference, teacher} <= set(means.index):
            shares.append(stats.gain_share(means[r.a], means[reference], means[teacher]))
        else:
            shares.append(np.nan)
    return gains.assign(share=shares)
