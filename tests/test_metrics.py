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
