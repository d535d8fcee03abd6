"""Tests for fndkit.coldstart: paper §3.5 (eqs. 20-24) and the §4.3 evaluation episodes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fndkit.coldstart import (
    STRATEGIES,
    aggregate_user_vectors,
    aggregation_weights,
    cold_start_protocol,
    cold_start_scores,
    neighbourhood,
    user_similarity,
    user_similarity_batched,
)


def _naive_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# Eq. 20


def test_user_similarity_equals_naive_loop_of_cosines():
    rng = _rng(1)
    users, outfits = rng.normal(size=(6, 5)), rng.normal(size=(3, 5))
    expected = [np.mean([_naive_cosine(u, o) for o in outfits]) for u in users]
    np.testing.assert_allclose(user_similarity(users, outfits), expected, rtol=1e-10, atol=1e-12)


def test_user_similarity_is_scale_invariant_and_ignores_outfit_order():
    rng = _rng(2)
    users, outfits = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    base = user_similarity(users, outfits)
    scaled = user_similarity(users * np.array([[2.0], [0.5], [7.0], [1.0]]), outfits[::-1] * 3.0)
    np.testing.assert_allclose(scaled, base, atol=1e-12)


def test_user_similarity_batched_equals_single_form_and_ignores_padding():
    rng = _rng(3)
    users = torch.as_tensor(rng.normal(size=(7, 4)))
    sizes = [1, 4, 2, 3]
    padded = torch.as_tensor(rng.normal(size=(len(sizes), max(sizes), 4)) * 100)  # padding is garbage
    mask = torch.zeros(len(sizes), max(sizes), dtype=torch.bool)
    for c, m in enumerate(sizes):
        mask[c, :m] = True
    s = user_similarity_batched(users, padded, mask)
    assert s.shape == (len(sizes), 7)
    for c, m in enumerate(sizes):
        torch.testing.assert_close(s[c], user_similarity(users, padded[c, :m]))


def test_user_similarity_follows_user_permutation():
    rng = _rng(4)
    users, outfits = rng.normal(size=(5, 3)), rng.normal(size=(2, 3))
    perm = rng.permutation(5)
    np.testing.assert_allclose(user_similarity(users[perm], outfits), user_similarity(users, outfits)[perm])


# --------------------------------------------------------------------------------------------
# Eq. 21


def test_neighbourhood_thresholds_and_keeps_argmax_even_when_all_below_delta():
    s = np.array([[0.5, -0.2, 0.3], [-0.5, -0.1, -0.3]])
    np.testing.assert_array_equal(neighbourhood(s, delta=0.0), [[True, False, True], [False, True, False]])
    # delta above every similarity: only the most similar user, never empty
    assert neighbourhood(s, delta=10.0).sum(axis=1).tolist() == [1, 1]
    assert neighbourhood(np.array([-0.9]), delta=0.5).tolist() == [True]


def test_neighbourhood_never_empty_on_random_inputs():
    s = torch.rand(50, 9) * 2 - 1
    for delta in (-2.0, 0.0, 0.5, 0.99, 5.0):
        assert neighbourhood(s, delta).any(dim=1).all()


def test_neighbourhood_is_strictly_greater_than_delta():
    # eq. 21 uses s > delta: a user exactly at delta is out unless it is the argmax
    s = np.array([0.0, 0.2, 0.0])
    np.testing.assert_array_equal(neighbourhood(s, delta=0.0), [False, True, False])
    scores = np.array([[1.0], [4.0], [10.0]])
    np.testing.assert_allclose(cold_start_scores(s, scores, "avg", delta=0.0), [4.0])
    np.testing.assert_allclose(cold_start_scores(s, scores, "w-avg", delta=0.0), [4.0])


# --------------------------------------------------------------------------------------------
# Eqs. 22-24: hand-computed toy cases


TOY_S = np.array([0.5, -0.2, 0.3])
TOY_SCORES = np.array([[1.0, 0.0], [5.0, 5.0], [3.0, 2.0]])


def test_avg_hand_computed():
    # delta = 0: neighbours are users 0 and 2 -> ((1 + 3) / 2, (0 + 2) / 2)
    np.testing.assert_allclose(cold_start_scores(TOY_S, TOY_SCORES, "avg", delta=0.0), [2.0, 1.0])
    # delta = -0.3: all three -> ((1 + 5 + 3) / 3, (0 + 5 + 2) / 3)
    np.testing.assert_allclose(cold_start_scores(TOY_S, TOY_SCORES, "avg", delta=-0.3), [3.0, 7.0 / 3.0])


def test_w_avg_hand_computed():
    # neighbours 0 and 2; weights exp(0.5/0.2) : exp(0.3/0.2) = 1 : e^-1
    w0 = 1.0 / (1.0 + math.exp(-1.0))
    w2 = 1.0 - w0
    expected = [w0 * 1.0 + w2 * 3.0, w0 * 0.0 + w2 * 2.0]
    np.testing.assert_allclose(cold_start_scores(TOY_S, TOY_SCORES, "w-avg", delta=0.0, tau=0.2), expected)
    np.testing.assert_allclose(aggregation_weights(TOY_S, "w-avg", 0.0, 0.2), [w0, 0.0, w2])


def test_w_avg_two_users_three_to_one():
    # tau chosen so exp((0.3 - 0.1) / tau) = 3: weights 3/4 and 1/4
    s, scores = np.array([0.3, 0.1]), np.array([[4.0, 0.0], [0.0, 8.0]])
    out = cold_start_scores(s, scores, "w-avg", delta=0.0, tau=0.2 / math.log(3.0))
    np.testing.assert_allclose(out, [3.0, 2.0])


def test_all_below_delta_gives_the_single_nearest_user():
    s = np.array([-0.5, -0.1, -0.3])
    for strategy in ("avg", "w-avg"):
        np.testing.assert_allclose(cold_start_scores(s, TOY_SCORES, strategy, delta=0.0), TOY_SCORES[1])


def test_population_and_nearest_references():
    np.testing.assert_allclose(cold_start_scores(TOY_S, TOY_SCORES, "population"), TOY_SCORES.mean(axis=0))
    np.testing.assert_allclose(cold_start_scores(TOY_S, TOY_SCORES, "nearest"), TOY_SCORES[0])
    # population ignores s entirely
    np.testing.assert_allclose(
        cold_start_scores(-TOY_S, TOY_SCORES, "population"), cold_start_scores(TOY_S, TOY_SCORES, "population")
    )
    # exact tie for nearest: split evenly, whichever position the tied users hold
    tied = np.array([0.4, 0.1, 0.4])
    np.testing.assert_allclose(cold_start_scores(tied, TOY_SCORES, "nearest"), [2.0, 1.0])


# --------------------------------------------------------------------------------------------
# Eqs. 22-24: properties


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("delta", [-1.5, 0.0, 0.4])
def test_weights_are_a_distribution_supported_on_the_neighbourhood(strategy, delta):
    s = torch.rand(20, 11, dtype=torch.float64) * 2 - 1
    w = aggregation_weights(s, strategy, delta=delta, tau=0.2)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(20, dtype=torch.float64))
    assert (w >= 0).all()
    if strategy in ("avg", "w-avg"):
        assert (w[~neighbourhood(s, delta)] == 0).all()


def test_w_avg_at_tiny_tau_is_the_most_similar_neighbour():
    rng = _rng(5)
    s = rng.uniform(-1, 1, size=(8, 6))
    scores = rng.normal(size=(6, 4))
    out = cold_start_scores(s, scores, "w-avg", delta=0.0, tau=1e-4)
    np.testing.assert_allclose(out, scores[s.argmax(axis=1)], atol=1e-9)


def test_avg_with_delta_below_every_similarity_is_the_plain_mean():
    rng = _rng(6)
    s = rng.uniform(-1, 1, size=(5, 7))
    scores = rng.normal(size=(7, 3))
    out = cold_start_scores(s, scores, "avg", delta=-1.01)
    np.testing.assert_allclose(out, np.broadcast_to(scores.mean(axis=0), (5, 3)))


def test_w_avg_at_huge_tau_equals_avg():
    rng = _rng(7)
    s, scores = rng.uniform(-1, 1, size=(4, 6)), rng.normal(size=(6, 3))
    np.testing.assert_allclose(
        cold_start_scores(s, scores, "w-avg", 0.0, tau=1e9), cold_start_scores(s, scores, "avg", 0.0), atol=1e-8
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_results_do_not_depend_on_user_order(strategy):
    rng = _rng(8)
    s = rng.uniform(-1, 1, size=(3, 9))
    s[0, [2, 6]] = s[0].max() + 0.1  # an exact tie for the most similar user
    s[1] -= 5  # every user below delta
    scores = rng.normal(size=(9, 5))
    perm = rng.permutation(9)
    np.testing.assert_allclose(
        cold_start_scores(s[:, perm], scores[perm], strategy), cold_start_scores(s, scores, strategy), atol=1e-12
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batched_equals_loop_of_single_form(strategy):
    rng = _rng(9)
    s, scores = rng.uniform(-1, 1, size=(6, 8)), rng.normal(size=(8, 5))
    batched = cold_start_scores(s, scores, strategy, delta=0.1, tau=0.3)
    looped = np.stack([cold_start_scores(s[c], scores, strategy, delta=0.1, tau=0.3) for c in range(6)])
    np.testing.assert_allclose(batched, looped, atol=1e-12)
    # per-cold-starter candidates [C, U, J]
    own = rng.normal(size=(6, 8, 4))
    batched_own = cold_start_scores(s, own, strategy, delta=0.1, tau=0.3)
    looped_own = np.stack([cold_start_scores(s[c], own[c], strategy, delta=0.1, tau=0.3) for c in range(6)])
    np.testing.assert_allclose(batched_own, looped_own, atol=1e-12)


def test_end_to_end_against_naive_loops_and_cold_profile():
    rng = _rng(10)
    users, candidates = rng.normal(size=(5, 4)), rng.normal(size=(6, 4))
    interacted = rng.normal(size=(2, 4))
    user_scores = np.array([[_naive_cosine(u, o) for o in candidates] for u in users])  # eq. 9
    s = np.array([np.mean([_naive_cosine(u, o) for o in interacted]) for u in users])  # eq. 20
    members = (s > 0.0) | (s == s.max())
    w = np.where(members, np.exp(s / 0.2), 0.0)
    expected = (w / w.sum()) @ user_scores  # eqs. 23-24 written out
    got = cold_start_scores(user_similarity(users, interacted), user_scores, "w-avg", 0.0, 0.2)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # the folded cold profile scores the same without the [U, J] table
    profile = aggregate_user_vectors(aggregation_weights(s, "w-avg", 0.0, 0.2), users)
    unit_candidates = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    np.testing.assert_allclose(profile @ unit_candidates.T, expected, atol=1e-12)


def test_numpy_in_numpy_out_torch_in_torch_out():
    s_np, scores_np = TOY_S, TOY_SCORES
    assert isinstance(cold_start_scores(s_np, scores_np), np.ndarray)
    assert isinstance(neighbourhood(s_np), np.ndarray)
    out_t = cold_start_scores(torch.as_tensor(s_np), scores_np)
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), cold_start_scores(s_np, scores_np))
    assert isinstance(user_similarity(torch.randn(3, 2), np.ones((1, 2), dtype=np.float32)), torch.Tensor)
    f32 = cold_start_scores(torch.tensor(s_np, dtype=torch.float32), torch.tensor(scores_np, dtype=torch.float32))
    assert f32.dtype == torch.float32


# --------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("tau", [0.0, -0.2, float("nan")])
def test_bad_tau_raises_naming_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        cold_start_scores(TOY_S, TOY_SCORES, "w-avg", tau=tau)
    with pytest.raises(ValueError, match="tau"):
        aggregation_weights(TOY_S, "avg", tau=tau)


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        cold_start_scores(TOY_S, TOY_SCORES, "weighted")
    for name in STRATEGIES:
        assert name in str(info.value)


def test_empty_cold_outfit_set_raises():
    with pytest.raises(ValueError, match="empty"):
        user_similarity(np.ones((3, 2)), np.zeros((0, 2)))
    mask = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        user_similarity_batched(torch.ones(3, 2), torch.ones(2, 2, 2), mask)


def test_nan_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        user_similarity(np.array([[1.0, np.nan]]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        cold_start_scores(np.array([0.1, np.nan]), np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        cold_start_scores(np.array([0.1, 0.2]), np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        neighbourhood(torch.tensor([0.1, float("nan")]))


def test_shape_mismatches_raise():
    with pytest.raises(ValueError, match="shape mismatch"):
        cold_start_scores(np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="dimension mismatch"):
        user_similarity(np.ones((3, 2)), np.ones((1, 5)))
    with pytest.raises(ValueError, match=r"s must be \[C, U\]"):
        cold_start_scores(np.zeros(3), np.zeros((2, 3, 4)))


# --------------------------------------------------------------------------------------------
# Evaluation episodes


def _outfits_by_user():
    return {
        "a": np.arange(10, 20),
        "b": np.array([3, 7, 11]),
        "c": np.array([42]),  # too few for n = 1 (nothing left to test on)
        "d": np.array([5, 6]),
    }


def test_protocol_splits_are_disjoint_and_complete():
    by_user = _outfits_by_user()
    samples, skipped = cold_start_protocol(["a", "b", "d"], by_user, n_interactions=1, repetitions=4, seed=0)
    assert skipped == ()
    assert len(samples) == 4 * 3
    assert [(x.repetition, x.user) for x in samples[:3]] == [(0, "a"), (0, "b"), (0, "d")]
    for x in samples:
        assert len(x.interacted_ids) == 1
        assert not set(x.interacted_ids) & set(x.held_out_ids)
        assert sorted([*x.interacted_ids, *x.held_out_ids]) == sorted(by_user[x.user])


def test_protocol_skips_and_counts_users_with_too_few_outfits():
    by_user = _outfits_by_user()
    with pytest.warns(UserWarning, match="skipped 3 of 4"):
        episodes = cold_start_protocol(list(by_user), by_user, n_interactions=5, repetitions=2, seed=0)
    assert episodes.skipped_users == ("b", "c", "d") and episodes.n_skipped == 3
    assert {x.user for x in episodes.samples} == {"a"} and len(episodes.samples) == 2
    assert all(len(x.interacted_ids) == 5 and len(x.held_out_ids) == 5 for x in episodes.samples)
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        episodes = cold_start_protocol(list(by_user), by_user, n_interactions=1, repetitions=1, seed=0)
    assert episodes.skipped_users == ("c",)
    assert [x.user for x in episodes.samples] == ["a", "b", "d"]
    assert all(len(x.held_out_ids) >= 1 for x in episodes.samples)


def test_protocol_is_deterministic_per_seed():
    by_user = {u: np.arange(u * 100, u * 100 + 12) for u in range(20)}

    def draw(seed):
        episodes = cold_start_protocol(range(20), by_user, n_interactions=5, repetitions=3, seed=seed)
        return [(x.repetition, x.user, tuple(x.interacted_ids)) for x in episodes.samples]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    first_reps = [x for x in draw(7) if x[0] == 0]
    second_reps = [x for x in draw(7) if x[0] == 1]
    assert [x[2] for x in first_reps] != [x[2] for x in second_reps]  # repetitions are fresh draws


def test_protocol_draws_interacted_outfits_uniformly():
    samples, _ = cold_start_protocol([0], {0: np.array([1, 2, 3, 4])}, n_interactions=1, repetitions=2000, seed=0)
    counts = np.bincount([int(x.interacted_ids[0]) for x in samples], minlength=5)[1:]
    assert np.all(np.abs(counts / 2000 - 0.25) < 0.04), counts


def test_protocol_validation():
    by_user = _outfits_by_user()
    with pytest.raises(ValueError, match="n_interactions"):
        cold_start_protocol(["a"], by_user, n_interactions=0, repetitions=1, seed=0)
    with pytest.raises(ValueError, match="repetitions"):
        cold_start_protocol(["a"], by_user, n_interactions=1, repetitions=0, seed=0)
    with pytest.raises(ValueError, match="zz"):
        cold_start_protocol(["a", "zz"], by_user, n_interactions=1, repetitions=1, seed=0)
    with pytest.raises(ValueError, match="twice"):
        cold_start_protocol(["x"], {"x": np.array([1, 2, 1])}, n_interactions=1, repetitions=1, seed=0)
