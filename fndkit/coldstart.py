"""Recommending to cold starters with an already-trained model and no training (paper §3.5).

A cold starter ``c`` is a user the model never saw; all we know is a few outfits ``J_c^+`` they
interacted with. We profile them against the trained users (memory-based collaborative filtering):

* eq. 20 — ``s_ci``: mean cosine score (eq. 9) of trained user ``i`` to the cold starter's outfits;
* eq. 21 — neighbourhood ``N_c = {i : s_ci > delta} ∪ {argmax_i s_ci}`` (never empty);
* eqs. 22–24 — the cold starter's score for outfit ``j`` is a convex combination of the trained
  users' scores ``r_ij``: uniform over ``N_c`` (``"avg"``) or ``softmax(s_c / tau)`` over ``N_c``
  (``"w-avg"``).

Two zero-cost references are accepted as strategies as well: ``"population"`` (every trained user,
equal weights; ignores the cold starter) and ``"nearest"`` (only the most similar trained user).

Everything is batched over cold starters ``C``: similarities are one ``[C, d] @ [d, U]`` product
and scores are one ``weights [C, U] @ user_scores [U, J]`` product. Because eq. 24 is linear in the
normalised user vectors, :func:`aggregate_user_vectors` folds the weights into one ``[C, d]`` cold
profile per starter, so scoring any outfit set costs one more product and no ``[U, J]`` score table.

Array types: every function accepts numpy arrays or torch tensors. The result is a torch tensor if
any array argument was a torch tensor (on that tensor's device), otherwise a numpy array. Floating
dtypes are kept (promoted to a common one); integer input becomes torch's default float dtype.

:func:`cold_start_protocol` draws the evaluation episodes of §4.3 / Table 3: per repetition and cold
starter, ``n`` interacted outfits (1 or 5 in the paper) and the rest as held-out test positives
(a pool without a released split, e.g. the synthetic benchmark's). :func:`released_split_protocol`
follows a released split instead (Polyvore-53 / -32): ``n`` of the user's training outfits are
revealed and the user's test outfits are held out.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .config import check_int

STRATEGIES = ("avg", "w-avg", "population", "nearest")
"""Aggregation strategies: the paper's two (eqs. 22, 23–24) and two zero-cost references."""

# --------------------------------------------------------------------------------------------
# Array plumbing


def _to_tensors(named: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
    """Convert arrays to tensors of one floating dtype on one device; report whether any was torch."""
    any_torch = any(isinstance(x, torch.Tensor) for x in named.values())
    device = next((x.device for x in named.values() if isinstance(x, torch.Tensor)), None)
    tensors = {}
    for name, x in named.items():
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex()):
            t = t.to(torch.get_default_dtype())
        if t.is_complex():
            raise ValueError(f"{name} is complex ({t.dtype}); pass real-valued scores or vectors")
        tensors[name] = t if device is None else t.to(device)
    dtype = tensors[next(iter(tensors))].dtype
    for t in tensors.values():
        dtype = torch.promote_types(dtype, t.dtype)
    tensors = {name: t.to(dtype) for name, t in tensors.items()}
    for name, t in tensors.items():
        if torch.isnan(t).any():
            raise ValueError(f"{name} contains NaN; clean the model outputs before cold-start scoring")
    return tensors, any_torch


def _out(t: torch.Tensor, as_torch: bool):
    return t if as_torch else t.detach().cpu().numpy()


def check_params(strategy: str, delta: float, tau: float) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    if not (isinstance(tau, numbers.Real) and tau > 0):  # `not >` also rejects NaN
        raise ValueError(f"tau must be > 0 (the w-avg temperature, paper uses 0.2); got tau={tau!r}")
    if not isinstance(delta, numbers.Real) or math.isnan(delta):
        raise ValueError(f"delta must be a number (similarity threshold, paper uses 0.0); got {delta!r}")


def _check_similarity(s: torch.Tensor) -> None:
    if s.dim() not in (1, 2):
        raise ValueError(f"s must be [U] or [C, U]; got shape {tuple(s.shape)}")
    if s.shape[-1] == 0:
        raise ValueError("s has no trained users (U = 0); cold starters need at least one neighbour")
    if torch.isinf(s).any():
        raise ValueError("s contains inf; similarities are mean cosines and must be finite")


# --------------------------------------------------------------------------------------------
# Eq. 20: similarity of cold starters to trained users


def user_similarity_batched(user_vectors, cold_outfit_vectors, outfit_mask):
    """Eq. 20 for ``C`` cold starters at once: ``s_ci`` = mean cosine of user ``i`` to ``J_c^+``.

    user_vectors: [U, d] trained users' vectors ``u_i``.
    cold_outfit_vectors: [C, m_max, d] outfit vectors ``o_j`` of each cold starter's interacted
        outfits, padded to the longest set.
    outfit_mask: [C, m_max] bool, True where the padded outfit is real. Every row needs at least one.
    Returns s: [C, U].

    The mean of cosines equals ``û_i · mean_j ô_j`` (cosine is linear in the normalised vectors),
    so this is one ``[C, d] @ [d, U]`` product whatever the set sizes.
    """
    mask_t = outfit_mask if isinstance(outfit_mask, torch.Tensor) else torch.as_tensor(np.asarray(outfit_mask))
    t, as_torch = _to_tensors({"user_vectors": user_vectors, "cold_outfit_vectors": cold_outfit_vectors})
    users, outfits = t["user_vectors"], t["cold_outfit_vectors"]
    if users.dim() != 2:
        raise ValueError(f"user_vectors must be [U, d]; got shape {tuple(users.shape)}")
    if outfits.dim() != 3:
        raise ValueError(f"cold_outfit_vectors must be [C, m_max, d]; got shape {tuple(outfits.shape)}")
    if outfits.shape[-1] != users.shape[-1]:
        raise ValueError(
            f"dimension mismatch: user_vectors have d={users.shape[-1]}, "
            f"cold_outfit_vectors have d={outfits.shape[-1]}; use vectors from the same model"
        )
    if tuple(mask_t.shape) != tuple(outfits.shape[:2]):
        raise ValueError(
            f"outfit_mask must be [C, m_max] = {tuple(outfits.shape[:2])}; got {tuple(mask_t.shape)}"
        )
    if mask_t.dtype != torch.bool:
        raise ValueError(f"outfit_mask must be boolean (True = real outfit); got dtype {mask_t.dtype}")
    mask = mask_t.to(outfits.device)
    counts = mask.sum(dim=1)
    if outfits.shape[0] and (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(
            f"cold starters at rows {empty[:10]} have no interacted outfits (empty J_c^+); "
            "eq. 20 needs at least one per cold starter — drop them or give them an outfit"
        )
    mean_outfit = (F.normalize(outfits, dim=-1) * mask.unsqueeze(-1)).sum(dim=1) / counts.clamp(min=1).unsqueeze(-1)
    s = mean_outfit @ F.normalize(users, dim=-1).T
    return _out(s, as_torch)


def user_similarity(user_vectors, cold_outfit_vectors):
    """Eq. 20 for one cold starter: s: [U], the mean cosine of each trained user to ``J_c^+``.

    user_vectors: [U, d]; cold_outfit_vectors: [m, d] (m >= 1 interacted outfits).
    """
    t, as_torch = _to_tensors({"user_vectors": user_vectors, "cold_outfit_vectors": cold_outfit_vectors})
    outfits = t["cold_outfit_vectors"]
    if outfits.dim() != 2:
        raise ValueError(f"cold_outfit_vectors must be [m, d]; got shape {tuple(outfits.shape)}")
    if outfits.shape[0] == 0:
        raise ValueError("cold_outfit_vectors is empty (m = 0); eq. 20 needs at least one interacted outfit")
    mask = torch.ones(1, outfits.shape[0], dtype=torch.bool, device=outfits.device)
    return _out(user_similarity_batched(t["user_vectors"], outfits.unsqueeze(0), mask)[0], as_torch)


# --------------------------------------------------------------------------------------------
# Eq. 21: neighbourhood; eqs. 22-23: aggregation weights


def _most_similar(s: torch.Tensor) -> torch.Tensor:
    # Every user tied at the maximum counts as i_c^*: argmax would pick by position and make the
    # result depend on user order.
    return s == s.max(dim=-1, keepdim=True).values


def _neighbourhood(s: torch.Tensor, delta: float) -> torch.Tensor:
    return (s > delta) | _most_similar(s)


def neighbourhood(s, delta: float = 0.0):
    """Eq. 21: N_c = users with ``s_ci > delta``, plus the most similar user (so never empty).

    s: [U] or [C, U] similarities (eq. 20). Returns a bool mask of the same shape. Users tied at
    the maximum similarity are all included, so the mask does not depend on user order.
    """
    if not isinstance(delta, numbers.Real) or math.isnan(delta):
        raise ValueError(f"delta must be a number (similarity threshold, paper uses 0.0); got {delta!r}")
    t, as_torch = _to_tensors({"s": s})
    s_t = t["s"]
    _check_similarity(s_t)
    return _out(_neighbourhood(s_t, delta), as_torch)


def aggregation_weights(s, strategy: str = "w-avg", delta: float = 0.0, tau: float = 0.2):
    """Weights ``w_ci`` over trained users with ``r_cj^cold = sum_i w_ci r_ij`` (eqs. 22–24).

    s: [U] or [C, U] similarities (eq. 20). Returns weights of the same shape; each row sums to 1.

    * ``"avg"`` — uniform over N_c (eqs. 21–22);
    * ``"w-avg"`` — ``softmax(s_c / tau)`` restricted to N_c (eq. 23);
    * ``"population"`` — uniform over every trained user (ignores ``s``; reference);
    * ``"nearest"`` — all weight on the most similar user (split evenly over exact ties; reference).

    ``tau`` must be > 0 for every strategy (it is only used by ``"w-avg"``); ``delta`` is used by
    ``"avg"`` and ``"w-avg"``.
    """
    check_params(strategy, delta, tau)
    t, as_torch = _to_tensors({"s": s})
    s_t = t["s"]
    _check_similarity(s_t)
    if strategy == "population":
        members = torch.ones_like(s_t, dtype=torch.bool)
    elif strategy == "nearest":
        members = _most_similar(s_t)
    else:
        members = _neighbourhood(s_t, delta)
    if strategy == "w-avg":
        # Masked softmax; the row maximum is always a member, so no row is all -inf.
        weights = torch.softmax((s_t / tau).masked_fill(~members, -math.inf), dim=-1)
    else:
        weights = members.to(s_t.dtype) / members.sum(dim=-1, keepdim=True)
    return _out(weights, as_torch)


# --------------------------------------------------------------------------------------------
# Eq. 24: cold-start scores


def cold_start_scores(s, user_scores, strategy: str = "w-avg", delta: float = 0.0, tau: float = 0.2):
    """Eqs. 21–24: the cold starters' preference scores ``r_cj^cold`` for candidate outfits.

    s: [U] (one cold starter) or [C, U] similarities (eq. 20).
    user_scores: trained users' scores ``r_ij`` (eq. 9) for the candidates, either
        [U, J] — the same J candidates for every cold starter — or
        [C, U, J] — each cold starter its own J candidates (needs ``s`` as [C, U]).
    Returns [J] for s: [U], else [C, J]. One (batched) matrix product: weights @ user_scores.
    See :func:`aggregation_weights` for ``strategy``, ``delta``, ``tau``.
    """
    t, as_torch = _to_tensors({"s": s, "user_scores": user_scores})
    s_t, scores = t["s"], t["user_scores"]
    _check_similarity(s_t)
    if scores.dim() not in (2, 3):
        raise ValueError(f"user_scores must be [U, J] or [C, U, J]; got shape {tuple(scores.shape)}")
    if scores.dim() == 3 and s_t.dim() != 2:
        raise ValueError("user_scores is [C, U, J] (per-cold-starter candidates), so s must be [C, U]")
    if scores.shape[-2] != s_t.shape[-1] or (scores.dim() == 3 and scores.shape[0] != s_t.shape[0]):
        raise ValueError(
            f"shape mismatch: s is {tuple(s_t.shape)} but user_scores is {tuple(scores.shape)}; "
            "user_scores rows must be the same trained users, in the same order, as s"
        )
    weights = aggregation_weights(s_t, strategy=strategy, delta=delta, tau=tau)
    if scores.dim() == 3:
        out = torch.bmm(weights.unsqueeze(1), scores).squeeze(1)
    else:
        out = weights @ scores
    return _out(out, as_torch)


def aggregate_user_vectors(weights, user_vectors):
    """Cold profile ``p_c = sum_i w_ci û_i`` (û = unit-norm user vector): [C, d] or [d].

    weights: [U] or [C, U] from :func:`aggregation_weights`; user_vectors: [U, d].
    Since ``r_ij = û_i · ô_j`` (eq. 9), ``p_c · ô_j`` equals eq. 24's ``r_cj^cold`` exactly for any
    outfit ``j`` (with ``ô`` the unit-norm outfit vector), so any candidate set is scored by one
    product with the normalised outfit vectors, without building the [U, J] score table.
    ``p_c`` is not unit-norm: use the dot product, not the cosine.
    """
    t, as_torch = _to_tensors({"weights": weights, "user_vectors": user_vectors})
    w, users = t["weights"], t["user_vectors"]
    if users.dim() != 2 or w.dim() not in (1, 2) or w.shape[-1] != users.shape[0]:
        raise ValueError(
            f"weights must be [U] or [C, U] and user_vectors [U, d] with the same U; "
            f"got {tuple(w.shape)} and {tuple(users.shape)}"
        )
    return _out(w @ F.normalize(users, dim=-1), as_torch)


# --------------------------------------------------------------------------------------------
# Evaluation episodes (§4.3, Table 3)


class ColdStartSample(NamedTuple):
    """One evaluation episode: a cold starter's ``interacted_ids`` (their J_c^+) and held-out positives."""

    repetition: int
    user: Hashable
    interacted_ids: np.ndarray
    held_out_ids: np.ndarray


class ColdStartEpisodes(NamedTuple):
    """What :func:`cold_start_protocol` returns; unpacks as ``samples, skipped_users``."""

    samples: list[ColdStartSample]
    skipped_users: tuple

    @property
    def n_skipped(self) -> int:
        return len(self.skipped_users)


def cold_start_protocol(
    cold_users: Iterable[Hashable],
    cold_outfits_by_user: Mapping[Hashable, Any],
    n_interactions: int,
    repetitions: int = 10,
    seed: int = 0,
) -> ColdStartEpisodes:
    """Draw the cold-start evaluation episodes of §4.3: ``n`` known outfits, the rest held out.

    cold_users: the cold starters to evaluate, in a fixed order (the order the draws are made in).
    cold_outfits_by_user: user -> 1-D array of that user's distinct outfit ids.
    n_interactions: how many interacted outfits each cold starter reveals (paper: 1 or 5).
    repetitions: independent draws per user (paper: 10, results averaged).
    seed: seeds one ``numpy.random.Generator``; the same arguments give the same episodes.

    For each repetition, then each user in order, a uniformly random ``n_interactions`` of the
    user's outfits become ``interacted_ids`` and all the others ``held_out_ids`` (each sorted in the
    order given). Users with fewer than ``n_interactions + 1`` outfits have nothing left to test on:
    they are skipped in every repetition, listed in ``skipped_users`` and reported with a warning.
    Returns ``ColdStartEpisodes(samples, skipped_users)``, samples ordered by (repetition, user).
    """
    check_int("n_interactions", n_interactions, 1, " (paper: 1 or 5)", error=ValueError)
    check_int("repetitions", repetitions, 1, " (paper: 10)", error=ValueError)
    users = list(cold_users)
    if len(set(users)) != len(users):
        raise ValueError("cold_users contains duplicates; list each cold starter once")
    missing = [u for u in users if u not in cold_outfits_by_user]
    if missing:
        raise ValueError(f"cold users {missing[:10]} have no entry in cold_outfits_by_user")

    outfits = {}
    for u in users:
        ids = np.asarray(cold_outfits_by_user[u])
        if ids.ndim != 1:
            raise ValueError(f"outfit ids of user {u!r} must be 1-D; got shape {ids.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"user {u!r} lists an outfit id twice; interacted and held-out sets would overlap")
        outfits[u] = ids
    skipped = tuple(u for u in users if len(outfits[u]) < n_interactions + 1)
    eligible = [u for u in users if u not in skipped]
    if skipped:
        warnings.warn(
            f"cold-start protocol: skipped {len(skipped)} of {len(users)} cold users with fewer than "
            f"{n_interactions + 1} outfits (n_interactions={n_interactions} plus one to test on)",
            stacklevel=2,
        )

    rng = np.random.default_rng(seed)
    samples = []
    for repetition in range(repetitions):
        for u in eligible:
            ids = outfits[u]
            order = rng.permutation(len(ids))
            samples.append(
                ColdStartSample(
                    repetition=repetition,
                    user=u,
                    interacted_ids=ids[np.sort(order[:n_interactions])],
                    held_out_ids=ids[np.sort(order[n_interactions:])],
                )
            )
    return ColdStartEpisodes(samples=samples, skipped_users=skipped)


def released_split_protocol(
    cold_users: Iterable[Hashable],
    revealable_by_user: Mapping[Hashable, Any],
    held_out_by_user: Mapping[Hashable, Any],
    n_interactions: int,
    repetitions: int = 10,
    seed: int = 0,
) -> ColdStartEpisodes:
    """Cold-start episodes on a released split (Polyvore-53 / -32, LPAE's protocol): ``n`` known
    outfits drawn from the user's released *training* outfits, evaluated on the released *test*.

    cold_users: the cold starters, in the order the draws are made in.
    revealable_by_user: user -> 1-D array of distinct ids of the outfits that may be revealed (the
        user's released training outfits).
    held_out_by_user: user -> 1-D array of ids of the user's released test positives (ids in
        their own space, e.g. candidate blocks); the same every repetition.
    n_interactions, repetitions, seed: as :func:`cold_start_protocol`.

    Per repetition, then per user in order, a uniformly random ``n_interactions`` of the user's
    revealable outfits become ``interacted_ids`` (sorted in the order given) and
    ``held_out_ids`` is the user's test list. Users with fewer than ``n_interactions`` revealable
    outfits, or with no test positive, are skipped in every repetition (listed in
    ``skipped_users``, reported with a warning).
    """
    check_int("n_interactions", n_interactions, 1, " (paper: 1 or 5)")
    check_int("repetitions", repetitions, 1, " (paper: 10)")
    users = list(cold_users)
    if len(set(users)) != len(users):
        raise ValueError("cold_users contains duplicates; list each cold starter once")
    revealable, held_out = {}, {}
    for u in users:
        if u not in revealable_by_user or u not in held_out_by_user:
            raise ValueError(f"cold user {u!r} has no entry in revealable_by_user / held_out_by_user")
        ids = np.asarray(revealable_by_user[u])
        test = np.asarray(held_out_by_user[u])
        if ids.ndim != 1 or test.ndim != 1:
            raise ValueError(f"outfit ids of user {u!r} must be 1-D; got shapes {ids.shape} and {test.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"user {u!r} lists a revealable outfit id twice")
        revealable[u], held_out[u] = ids, test
    skipped = tuple(u for u in users if len(revealable[u]) < n_interactions or len(held_out[u]) == 0)
    eligible = [u for u in users if u not in skipped]
    if skipped:
        warnings.warn(
            f"cold-start protocol (released split): skipped {len(skipped)} of {len(users)} cold users "
            f"with fewer than {n_interactions} released training outfits (n_interactions) or no test "
            f"outfit",
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    samples = []
    for repetition in range(repetitions):
        for u in eligible:
            ids = revealable[u]
            chosen = np.sort(rng.permutation(len(ids))[:n_interactions])
            samples.append(ColdStartSample(repetition=repetition, user=u, interacted_ids=ids[chosen],
                                           held_out_ids=held_out[u]))
    return ColdStartEpisodes(samples=samples, skipped_users=skipped)
