"""Per-user AUC and NDCG: closed forms, a naive loop reference, averaging, skipping, ties."""

import time

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from fndkit.metrics import ranking_metrics, ranking_metrics_all


def one_user(position: int, n: int = 11):
    """One positive among n candidates, ranked ``position`` (1-based) by score."""
    scores = np.arange(n, 0, -1, dtype=float)     # n, n-1, ..., 1: row r has rank r + 1
    labels = np.zeros(n, dtype=int)
    labels[position - 1] = 1
    return np.zeros(n, dtype=int), scores, labels


def naive_lpae(scores, labels):
    """Mean over k = 1..n of NDCG@k with discount log2(max(rank, 2)); pessimistic ties."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], labels[i]))
    gains = [labels[i] for i in order]
    ideal = sorted(gains, reverse=True)
    disc = [1.0 / np.log2(max(r, 2)) for r in range(1, len(gains) + 1)]
    values = []
    for k in range(1, len(gains) + 1):
        dcg = sum(gains[r] * disc[r] for r in range(k))
        idcg = sum(ideal[r] * disc[r] for r in range(k))
        values.append(dcg / idcg)
    return float(np.mean(values))


def test_positive_ranked_second_of_eleven():
    u, s, y = one_user(2)
    assert ranking_metrics(u, s, y, ndcg="lpae")["ndcg"] == pytest.approx(10 / 11)
    assert ranking_metrics(u, s, y, ndcg="standard")["ndcg"] == pytest.approx(1 / np.log2(3))
    assert ranking_metrics(u, s, y)["auc"] == pytest.approx(9 / 10)


def test_positive_ranked_first_and_last():
    u, s, y = one_user(1)
    m = ranking_metrics_all(u, s, y)
    assert m["auc"] == 1.0 and m["ndcg_lpae"] == pytest.approx(1.0)
    assert m["ndcg_standard"] == pytest.approx(1.0)
    u, s, y = one_user(11)
    m = ranking_metrics_all(u, s, y)
    assert m["auc"] == 0.0
    # only the k = 11 cut-off finds the positive, at discount 1 / log2(11)
    assert m["ndcg_lpae"] == pytest.approx(1 / (11 * np.log2(11)))
    assert m["ndcg_standard"] == pytest.approx(1 / np.log2(12))


def test_lpae_matches_naive_loop_on_random_data():
    rng = np.random.default_rng(0)
    users, scores, labels = [], [], []
    for u in range(25):
        n = int(rng.integers(2, 30))
        y = (rng.random(n) < rng.uniform(0.1, 0.6)).astype(int)
        y[0], y[1] = 1, 0                         # at least one of each
        users.append(np.full(n, u)), scores.append(rng.normal(size=n)), labels.append(y)
    # shuffle rows across users: grouping must not rely on contiguity
    perm = rng.permutation(sum(map(len, users)))
    U, S, Y = (np.concatenate(a)[perm] for a in (users, scores, labels))
    m = ranking_metrics_all(U, S, Y)
    ref_lpae = np.mean([naive_lpae(s, y) for s, y in zip(scores, labels)])
    ref_std = np.mean([ndcg_score([y], [s]) for s, y in zip(scores, labels)])
    ref_auc = np.mean([roc_auc_score(y, s) for s, y in zip(scores, labels)])
    assert m["ndcg_lpae"] == pytest.approx(ref_lpae, abs=1e-12)
    assert m["ndcg_standard"] == pytest.approx(ref_std, abs=1e-12)
    assert m["auc"] == pytest.approx(ref_auc, abs=1e-12)
    assert (m["n_users"], m["n_skipped"]) == (25, 0)


def test_average_over_users_is_unweighted():
    u1, s1, y1 = one_user(1, n=3)                 # lpae 1, auc 1
    u2, s2, y2 = one_user(2, n=21)                # lpae 20/21, auc 19/20
    m = ranking_metrics(np.r_[u1, u2 + 7], np.r_[s1, s2], np.r_[y1, y2])
    assert m["ndcg"] == pytest.approx((1 + 20 / 21) / 2)
    assert m["auc"] == pytest.approx((1 + 19 / 20) / 2)
    assert m["n_users"] == 2


def test_users_without_both_labels_are_skipped():
    u, s, y = one_user(2)
    users = np.r_[u, [5, 5, 5], [9, 9]]
    scores = np.r_[s, [0.3, 0.2, 0.1], [1.0, 2.0]]
    labels = np.r_[y, [0, 0, 0], [1, 1]]          # user 5: no positive; user 9: no negative
    m = ranking_metrics_all(users, scores, labels)
    assert (m["n_users"], m["n_skipped"]) == (1, 2)
    assert m["ndcg_lpae"] == pytest.approx(10 / 11)
    none = ranking_metrics([1, 1], [0.1, 0.2], [0, 0])
    assert none["n_users"] == 0 and np.isnan(none["auc"]) and np.isnan(none["ndcg"])


def test_ties_are_pessimistic_and_do_not_crash():
    # constant scores, positive first in input order (as in the candidate lists)
    u, _, y = one_user(1)
    m = ranking_metrics_all(u, np.zeros(11), y)
    assert m["auc"] == pytest.approx(0.5)
    assert m["ndcg_lpae"] == pytest.approx(1 / (11 * np.log2(11)))   # positive placed last
    tie_avg = np.mean(1 / np.log2(np.arange(2, 13)))                  # sklearn averages ties
    assert m["ndcg_standard"] == pytest.approx(tie_avg)
    rng = np.random.default_rng(1)
    users, scores, labels = rng.integers(0, 5, 300), rng.integers(0, 3, 300), rng.integers(0, 2, 300)
    m = ranking_metrics_all(users, scores.astype(float), labels)
    ref = np.mean([naive_lpae(list(scores[users == k]), list(labels[users == k])) for k in range(5)])
    assert m["ndcg_lpae"] == pytest.approx(ref)
    ref_auc = np.mean([roc_auc_score(labels[users == k], scores[users == k]) for k in range(5)])
    assert m["auc"] == pytest.approx(ref_auc, abs=1e-12)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="lpae, standard"):
        ranking_metrics([0, 0], [1.0, 0.0], [1, 0], ndcg="dcg")
    with pytest.raises(ValueError, match="aligned"):
        ranking_metrics([0, 0], [1.0], [1, 0])
    with pytest.raises(ValueError, match="labels"):
        ranking_metrics([0, 0], [1.0, 0.0], [2, 0])
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics([0, 0], [np.nan, 0.0], [1, 0])


def test_quarter_million_candidates_in_seconds():
    rng = np.random.default_rng(2)
    n_users, per_user = 630, 11 * 36              # ~250k candidates, Polyvore-630 test scale
    users = np.repeat(np.arange(n_users), per_user)
    labels = np.tile(np.r_[1, np.zeros(10, dtype=int)], n_users * 36)
    scores = rng.normal(size=users.size) + labels
    t0 = time.perf_counter()
    m = ranking_metrics_all(users, scores, labels)
    assert time.perf_counter() - t0 < 5.0
    assert m["n_users"] == n_users and 0.6 < m["auc"] < 0.9


def test_per_user_auc_matches_sklearn_per_user():
    from sklearn.metrics import roc_auc_score

    from fndkit.metrics import per_user_auc

    rng = np.random.default_rng(3)
    users = np.repeat([7, 2, 5, 9], 11)
    scores = rng.normal(size=users.size).round(1)  # rounded: ties inside users
    labels = np.tile([1] + [0] * 10, 4)
    labels[users == 9] = 0  # user 9 has no positive: left out
    got_users, got_auc = per_user_auc(users, scores, labels)
    assert got_users.tolist() == [2, 5, 7]
    expected = [roc_auc_score(labels[users == u], scores[users == u]) for u in (2, 5, 7)]
    np.testing.assert_allclose(got_auc, expected)


# ---- the clean metric: true false negatives removed --------------------------------------------

def test_clean_metric_closed_form():
    from fndkit.metrics import ranking_metrics_clean

    # user 0: positive 0.5; negatives 0.9 (a true false negative), 0.1, 0.2
    # user 1: positive 0.3; negatives 0.8 (false negative), 0.6 (an ordinary negative above it), 0.1
    users = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.5, 0.9, 0.1, 0.2, 0.3, 0.8, 0.6, 0.1])
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    fn = np.array([False, True, False, False, False, True, False, False])
    standard = ranking_metrics_all(users, scores, labels)
    clean = ranking_metrics_clean(users, scores, labels, fn)
    assert standard["auc"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert clean["auc"] == pytest.approx((1.0 + 0.5) / 2)           # 2/2 and 1/2 wins
    # lpae NDCG: user 0's positive first of 3 -> 1; user 1's second of 3: mean over k of NDCG@k =
    # (0 + 1 + 1) / 3 (rank 2 is undiscounted under lpae)
    assert clean["ndcg_lpae"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert clean["ndcg_standard"] == pytest.approx((1.0 + 1 / np.log2(3)) / 2)
    assert clean["n_removed"] == 2 and clean["removed_fraction"] == pytest.approx(2 / 6)
    assert clean["n_users"] == 2


def test_clean_metric_ignores_flags_on_positives_and_equals_standard_without_flags():
    from fndkit.metrics import ranking_metrics_clean

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(5), 11)
    labels = np.tile(np.r_[1, np.zeros(10, dtype=int)], 5)
    scores = rng.random(users.size)
    none = ranking_metrics_clean(users, scores, labels, np.zeros(users.size, bool))
    on_positives = ranking_metrics_clean(users, scores, labels, labels == 1)
    standard = ranking_metrics_all(users, scores, labels)
    for key in ("auc", "ndcg_lpae", "ndcg_standard", "n_users"):
        assert none[key] == pytest.approx(standard[key]) and on_positives[key] == pytest.approx(standard[key])
    assert on_positives["n_removed"] == 0
    # a user whose every negative is a false negative has no negative left: skipped, not crashed
    fn = (users == 0) & (labels == 0)
    out = ranking_metrics_clean(users, scores, labels, fn)
    assert out["n_users"] == 4 and out["n_skipped"] == 1
    with pytest.raises(ValueError, match="aligned"):
        ranking_metrics_clean(users, scores, labels, fn[:-1])


def test_evaluate_clean_removes_the_generators_false_negatives(monkeypatch):
    """evaluate_clean on the tiny benchmark with scores = the true affinity plus a bonus for every
    true false negative: the clean AUC is the ceiling on the lists without them, computed here."""
    from fndkit import evaluate as ev
    from fndkit.data.sampling import attach_candidates
    from fndkit.data.synthetic import make_dataset

    ds = make_dataset("tiny", seed=0)
    attach_candidates(ds, seed=0, ratio=10)

    def fake_scores(model, dataset, users, items, device="cpu", cache=None):
        aff = dataset.truth.true_affinity(users, items)
        return aff + 10.0 * dataset.truth.is_false_negative(users, items)   # FNs on top of everything

    monkeypatch.setattr(ev, "score_rows_by_user", fake_scores)
    monkeypatch.setattr(ev, "shared_item_cache", lambda *a, **k: None)
    out = ev.evaluate_clean(object(), ds, split="test", protocols=("random",))
    cand = ds.candidate_set("test", "random")
    fn = ds.truth.is_false_negative(cand.user, cand.items) & (cand.label == 0)
    assert fn.any(), "the tiny test lists should hold some true false negatives"
    keep = ~fn
    expected = ranking_metrics_all(cand.user[keep], ds.truth.true_affinity(cand.user, cand.items)[keep],
                                   cand.label[keep])
    assert out["random"]["auc"] == pytest.approx(expected["auc"])
    assert out["random"]["n_removed"] == int(fn.sum())
    standard = ranking_metrics_all(cand.user, fake_scores(None, ds, cand.user, cand.items), cand.label)
    assert out["random"]["auc"] > standard["auc"]        # the planted false negatives cost AUC only there
    ds.truth = None
    assert ev.evaluate_clean(object(), ds) == {}
