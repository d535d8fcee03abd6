"""Negative outfits: category-wise random mixtures, hard negatives, fixed evaluation candidates.

The paper (§3.2.1) gives every positive pair (u_i, o_j) a set of N sampled negatives o_jk that
"mainly contains randomly generated outfits and even can include positive outfits of other users";
§4.1.1 evaluates each user on 1 positive : 10 negatives, and §4.4 on hard negatives (other users'
positives), training with half hard negatives. What the paper leaves out follows FHN's and LPAE's
code (DESIGN §3):

* a random mixture keeps its template's slot layout (an absent slot stays ``-1``) and draws each
  present slot uniformly from the items of that slot's category that occur in the *same split's*
  positive outfits (:func:`category_pools`);
* a mixture equal to any positive outfit of the dataset (as a set of items) is redrawn, and so is a
  mixture that repeats an item (two identical tops in a variable-size outfit);
* training negatives are redrawn every step (:class:`NegativeSampler`): one set shared by the batch
  (the default), or each pair's own as eq. (10) writes it (``mode="per_pair"``); either way a
  negative is rejected only when it equals a training positive of its own user (a shared one: of
  any user in the batch; :func:`user_positive_keys`; §3.2.1, §4.9), so held-out (validation,
  test) positives never shape training; evaluation candidates are fixed per seed and reject
  every positive of the dataset (:func:`build_candidates`).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from .schema import (CATEGORIES, PROTOCOLS, SPLITS, CandidateSet, DatasetError, OutfitDataset,
                     outfit_hashes, split_index, split_sizes)

EVAL_SPLITS = ("val_teacher", "val_student", "test")
MAX_REDRAWS = 100  # rounds of redrawing rejected rows before giving up with an error


# --------------------------------------------------------------------------------------------
# small helpers


def _item_array(x: Any, name: str) -> np.ndarray:
    """Item ids / user ids from numpy or a (possibly CUDA) torch tensor, as int64."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _sorted_unique(arr: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy's hash-based unique is ~10x slower on 10^5 uint64 hashes)."""
    arr = np.sort(arr.ravel())
    keep = np.ones(arr.size, dtype=bool)
    keep[1:] = arr[1:] != arr[:-1]
    return arr[keep]


def _hash_array(reject: Any) -> np.ndarray:
    """A set / list / array of outfit hashes as a sorted uint64 array (kept as is when it
    already is one, so a sampler's per-step calls cost nothing here)."""
    if isinstance(reject, (set, frozenset)):
        arr = np.fromiter(reject, dtype=np.uint64, count=len(reject))
    else:
        arr = np.asarray(reject, dtype=np.uint64).ravel()
    if arr.size > 1 and not (arr[1:] >= arr[:-1]).all():
        arr = np.sort(arr)
    return arr


def _in_sorted(values: np.ndarray, sorted_arr: np.ndarray) -> np.ndarray:
    """values ∈ sorted_arr, elementwise (sorted_arr sorted ascending)."""
    if sorted_arr.size == 0:
        return np.zeros(values.shape, dtype=bool)
    idx = np.minimum(np.searchsorted(sorted_arr, values), sorted_arr.size - 1)
    return sorted_arr[idx] == values


def _has_repeated_item(items: np.ndarray) -> np.ndarray:
    """[M, S] -> [M] bool: some item id occurs twice in the row (absent slots ignored)."""
    if items.shape[1] < 2:
        return np.zeros(items.shape[0], dtype=bool)
    s = np.sort(items, axis=1)
    return ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).any(axis=1)


def _user_outfit_keys(users: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Mix a user id into an outfit hash, to ask "is this item set a positive of this user?"."""
    with np.errstate(over="ignore"):
        return hashes ^ ((users.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15))


def _step_rng(*entropy: int) -> np.random.Generator:
    for e in entropy:
        if not isinstance(e, (int, np.integer)) or e < 0:
            raise ValueError(f"seeds, epochs and steps must be non-negative integers, got {e!r}")
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


def positive_hashes(dataset: OutfitDataset) -> np.ndarray:
    """Sorted unique order-free hashes of every positive outfit of the dataset (all splits): [H]."""
    return _sorted_unique(outfit_hashes(dataset.outfit_items))


def user_positive_keys(dataset: OutfitDataset, split: str | None = None) -> np.ndarray:
    """Sorted unique (user, item set) keys of every positive of ``split`` (None: every split):
    what ``random_mixtures(..., reject=keys, reject_users=users)`` rejects per user."""
    ids = np.arange(dataset.n_outfits) if split is None else dataset.outfits_of(split)
    return _sorted_unique(_user_outfit_keys(dataset.outfit_user[ids],
                                            outfit_hashes(dataset.outfit_items[ids])))


# --------------------------------------------------------------------------------------------
# random mixtures


def category_pools(dataset: OutfitDataset, split: str) -> list[np.ndarray]:
    """Per category (``CATEGORIES`` order), the sorted unique item ids in ``split``'s positives.

    These are the pools random mixtures for that split draw from (DESIGN §3).
    """
    items = dataset.outfit_items[dataset.split_mask(split)]
    ids = np.unique(items[items >= 0])
    cats = dataset.item_category[ids]
    return [ids[cats == c] for c in range(len(CATEGORIES))]


def random_mixtures(dataset: OutfitDataset, template_items: Any, split: str,
                    rng: np.random.Generator, reject: Any = None, *,
                    pools: Sequence[np.ndarray] | None = None,
                    reject_users: Any = None) -> np.ndarray:
    """Category-wise random mixtures shaped like the template rows.

    template_items: [M, S] item ids; only its layout (which slots are ``-1``) is used.
    Returns [M, S] int64: slot ``s`` of row ``m`` is ``-1`` where the template's is, otherwise an
    item drawn uniformly from ``split``'s pool for category ``slot_categories[s]``.

    reject: hashes (:func:`fndkit.data.schema.outfit_hashes`) of item sets a mixture must not
    equal; by default every positive outfit of the dataset. Pass ``()`` to reject nothing. Rows
    equal to a rejected set, or repeating an item, are redrawn (at most ``MAX_REDRAWS`` rounds).
    pools: precomputed :func:`category_pools` of ``split`` (saves a pass over the outfits).
    reject_users: [M] a user per row; then ``reject`` holds (user, item set) keys
    (:func:`user_positive_keys`) and row m is redrawn when it equals a rejected set *of
    reject_users[m]* — e.g. only that user's own training positives.
    """
    template = _item_array(template_items, "template_items")
    S = dataset.n_slots
    if template.ndim != 2 or template.shape[1] != S:
        raise ValueError(f"template_items must have shape [M, {S}] (the dataset's slots), "
                         f"got {template.shape}")
    M = template.shape[0]
    out = np.full((M, S), -1, dtype=np.int64)
    if M == 0:
        return out
    present = template >= 0
    empty = ~present.any(axis=1)
    if empty.any():
        raise ValueError(f"template row {int(np.flatnonzero(empty)[0])} has no item (all -1); "
                         f"every template needs at least one present slot")
    pools = category_pools(dataset, split) if pools is None else pools
    slot_pools = [np.asarray(pools[int(c)], dtype=np.int64) for c in dataset.slot_categories]
    for s, pool in enumerate(slot_pools):
        if pool.size == 0 and present[:, s].any():
            raise DatasetError(
                f"split {split!r} of {dataset.name!r} has no "
                f"{CATEGORIES[int(dataset.slot_categories[s])]} items to fill slot {s} of a random "
                f"mixture; that split needs positive outfits using the category")
    reject_hashes = positive_hashes(dataset) if reject is None else _hash_array(reject)
    if reject_users is not None:
        reject_users = _item_array(reject_users, "reject_users").ravel()
        if reject_users.shape != (M,):
            raise ValueError(f"reject_users must hold one user per template row ({M}), got "
                             f"shape {reject_users.shape}")
        if reject is None:
            raise ValueError("reject_users needs reject = user_positive_keys(...) (keys, not hashes)")

    todo = np.arange(M)
    for _ in range(MAX_REDRAWS):
        for s, pool in enumerate(slot_pools):
            rows = todo[present[todo, s]]
            out[rows, s] = pool[rng.integers(pool.size, size=rows.size)]
        drawn = out[todo]
        keys = outfit_hashes(drawn)
        if reject_users is not None:
            keys = _user_outfit_keys(reject_users[todo], keys)
        bad = _in_sorted(keys, reject_hashes) | _has_repeated_item(drawn)
        todo = todo[bad]
        if todo.size == 0:
            return out
    sizes = ", ".join(f"{CATEGORIES[c]}={len(p)}" for c, p in enumerate(pools))
    raise DatasetError(
        f"could not draw {todo.size} of {M} random mixtures for split {split!r} of "
        f"{dataset.name!r} that differ from every rejected outfit after {MAX_REDRAWS} redraws; "
        f"the split's item pools ({sizes}) leave (almost) no unused combinations for layouts like "
        f"{template[todo[0]].tolist()}. Use a larger split or dataset, or pass a smaller reject set")


# --------------------------------------------------------------------------------------------
# hard negatives


class _HardIndex:
    """One split's positives sorted by user, to draw "another user's positive" in O(M).

    own_split: whose positives count as a user's own when rejecting a draw (None: every split).
    """

    def __init__(self, dataset: OutfitDataset, split: str, own_split: str | None = None):
        self.dataset, self.split = dataset, split
        positives = dataset.outfits_of(split)
        order = np.argsort(dataset.outfit_user[positives], kind="stable")
        self.outfits = positives[order]                              # [P] sorted by owner
        self.owner = dataset.outfit_user[self.outfits]               # [P]
        self.count = np.bincount(self.owner, minlength=dataset.n_users)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        self.own_keys = user_positive_keys(dataset, own_split)

    def draw_excluding_users(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[M] outfit ids: for each ``users[m]``, a positive of another user, never one whose
        item set is also a positive of ``users[m]``."""
        M = users.shape[0]
        out = np.zeros(M, dtype=np.int64)
        if M == 0:
            return out
        if users.min() < 0 or users.max() >= self.count.size:
            raise ValueError(f"user ids must lie in 0..{self.count.size - 1}, got "
                             f"{int(users.min())}..{int(users.max())}")
        available = self.outfits.size - self.count[users]
        if (available == 0).any():
            u = int(users[np.flatnonzero(available == 0)[0]])
            raise DatasetError(f"split {self.split!r} of {self.dataset.name!r} has no positive "
                               f"outfit of a user other than {u}; hard negatives need one")
        todo = np.arange(M)
        for _ in range(MAX_REDRAWS):
            u = users[todo]
            # draw uniformly among the positives outside u's contiguous block
            r = rng.integers(available[todo])
            idx = np.where(r < self.start[u], r, r + self.count[u])
            out[todo] = self.outfits[idx]
            keys = _user_outfit_keys(u, outfit_hashes(self.dataset.outfit_items[out[todo]]))
            todo = todo[_in_sorted(keys, self.own_keys)]
            if todo.size == 0:
                return out
        raise DatasetError(f"could not find hard negatives for {todo.size} users in split "
                           f"{self.split!r}: other users' positives keep equalling their own")


def hard_negatives(dataset: OutfitDataset, users: Any, split: str, rng: np.random.Generator,
                   return_outfits: bool = False):
    """Hard negatives: for each ``users[m]``, a random positive outfit of ``split`` posted by
    another user (paper §4.4), never one whose item set the user also posted.

    users: [M]. Returns items [M, S] (and outfit ids [M] with ``return_outfits=True``).
    """
    users = _item_array(users, "users").ravel()
    outfits = _HardIndex(dataset, split).draw_excluding_users(users, rng)
    items = dataset.outfit_items[outfits]
    return (items, outfits) if return_outfits else items


# --------------------------------------------------------------------------------------------
# fixed evaluation candidates


def build_candidates(dataset: OutfitDataset, seed: int = 0, ratio: int = 10,
                     splits: Iterable[str] = EVAL_SPLITS,
                     protocols: Iterable[str] = PROTOCOLS) -> dict[str, CandidateSet]:
    """Fixed evaluation lists, keyed ``"<split>/<protocol>"`` (paper §4.1.1, §4.4).

    For every positive outfit of the split, in outfit-id order, one block of ``ratio + 1`` rows
    all with the positive's user: the positive (label 1) then ``ratio`` negatives (label 0) —
    random mixtures laid out like the positive (``"random"``) or other users' positives
    (``"hard"``). Each (seed, split, protocol) has its own random stream, so asking for a subset
    of splits or protocols gives the same lists.
    """
    if not isinstance(ratio, (int, np.integer)) or ratio < 1:
        raise ValueError(f"ratio (negatives per positive) must be a positive integer, got {ratio!r}")
    S = dataset.n_slots
    reject = positive_hashes(dataset)
    out: dict[str, CandidateSet] = {}
    for split in splits:
        s_idx = split_index(split)
        positives = dataset.outfits_of(split)
        P = positives.size
        pos_items = dataset.outfit_items[positives]
        pos_users = dataset.outfit_user[positives].astype(np.int64)
        neg_users = np.repeat(pos_users, ratio)
        for protocol in protocols:
            if protocol not in PROTOCOLS:
                raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
            rng = _step_rng(seed, s_idx, PROTOCOLS.index(protocol))
            if protocol == "random":
                negatives = random_mixtures(dataset, np.repeat(pos_items, ratio, axis=0), split,
                                            rng, reject=reject)
            else:
                negatives = hard_negatives(dataset, neg_users, split, rng)
            items = np.concatenate([pos_items[:, None, :], negatives.reshape(P, ratio, S)], axis=1)
            label = np.zeros((P, ratio + 1), dtype=np.int8)
            label[:, 0] = 1
            out[f"{split}/{protocol}"] = CandidateSet(
                user=np.repeat(pos_users, ratio + 1), items=items.reshape(-1, S).astype(np.int64),
                label=label.ravel())
    return out


def attach_candidates(dataset: OutfitDataset, seed: int = 0, ratio: int = 10,
                      splits: Iterable[str] = EVAL_SPLITS) -> OutfitDataset:
    """Fill ``dataset.candidates`` with :func:`build_candidates` for the keys it lacks.

    Existing keys are kept: a real dataset arrives with its released candidate lists.
    """
    for split in splits:
        missing = [p for p in PROTOCOLS if f"{split}/{p}" not in dataset.candidates]
        if missing:
            dataset.candidates.update(build_candidates(dataset, seed=seed, ratio=ratio,
                                                       splits=(split,), protocols=missing))
    return dataset


# --------------------------------------------------------------------------------------------
# training negatives


class NegativeSampler:
    """Negatives for one training batch, redrawn every step (paper §3.2.1, eq. 10).

    Two modes (``TrainConfig.negatives``):

    * ``"shared"`` (the default): ``sample`` returns N = ``n_negatives`` outfits [N, S] shared by
      every pair of the batch: the first ``round(hard_fraction * N)`` are hard negatives
      (``split`` positives of other users), the rest random mixtures whose layouts are copied from
      randomly chosen batch rows. No mixture equals a ``split`` positive of any user of the batch
      (held-out positives may appear: rejecting them would let test labels shape training).
      "Other users" for a shared hard negative: users with no pair in the batch, so no hard
      negative is a known positive of any pair in it. Only when every user with ``split``
      positives is in the batch (tiny data) does it fall back to users other than a randomly
      chosen batch pair's user; ``sample(..., return_owners=True)`` reports each negative's owner.
    * ``"per_pair"``: eq. (10) literally — every pair (u_i, o_j) of the batch gets its own N
      negatives, [B, N, S]: hard ones are ``split`` positives of users other than u_i, random
      mixtures keep o_j's layout. Only u_i's own ``split`` positives are rejected: other users'
      positives and held-out positives may appear (§3.2.1, §4.9), so no test label is used.

    ``reject``: ``"own_train"`` (the default for both modes: a user's own ``split`` positives;
    for a shared set, those of every user of the batch) or ``"all_positives"`` (every positive of
    the dataset, held-out ones included: fndkit's rule before issue 25, kept to reproduce older
    runs; it uses test labels to pick training negatives).
    ``hard_fraction = 0.5`` is the paper's hard-negative training (§4.4).
    """

    MODES = ("shared", "per_pair")
    REJECT = ("all_positives", "own_train")

    def __init__(self, dataset: OutfitDataset, split: str = "train", n_negatives: int = 32,
                 hard_fraction: float = 0.0, seed: int = 0, mode: str = "shared",
                 reject: str | None = None):
        split_index(split)
        if not isinstance(n_negatives, (int, np.integer)) or n_negatives < 1:
            raise ValueError(f"n_negatives must be an integer >= 1, got {n_negatives!r}")
        if not 0.0 <= float(hard_fraction) <= 1.0:
            raise ValueError(f"hard_fraction must lie in [0, 1], got {hard_fraction!r}")
        if mode not in self.MODES:
            raise ValueError(f"mode={mode!r} must be one of {self.MODES} ('shared': one set of "
                             f"negatives per batch; 'per_pair': each positive its own, eq. 10)")
        reject = reject or "own_train"
        if reject not in self.REJECT:
            raise ValueError(f"reject={reject!r} must be one of {self.REJECT} or None ('own_train')")
        _step_rng(seed)  # validates the seed
        self.dataset, self.split, self.seed = dataset, split, int(seed)
        self.mode, self.reject_rule = mode, reject
        self.n_negatives = int(n_negatives)
        self.hard_fraction = float(hard_fraction)
        self.n_hard = int(round(self.hard_fraction * self.n_negatives))
        self.pools = category_pools(dataset, split)
        own_train = reject == "own_train"
        # all_positives: hashes of every positive; own_train: (user, item set) keys of split positives
        self.reject = user_positive_keys(dataset, split) if own_train else positive_hashes(dataset)
        self._hard = _HardIndex(dataset, split, own_split=split if own_train else None) if self.n_hard else None
        if self._hard is not None and np.count_nonzero(self._hard.count) < 2:
            raise DatasetError(f"hard_fraction={hard_fraction} needs positives of at least two "
                               f"users in split {split!r}; set hard_fraction=0")

    def sample(self, batch_outfit_items: Any, batch_users: Any, epoch: int, step: int,
               return_owners: bool = False):
        """Negatives for one batch, reproducible from (seed, epoch, step).

        batch_outfit_items: [B, S] the batch's positive outfits (layouts to copy);
        batch_users: [B]. Returns int64 [N, S] (shared) or [B, N, S] (per pair), and with
        ``return_owners=True`` the user who posted each hard negative (-1 for random mixtures),
        [N] or [B, N].
        """
        batch = _item_array(batch_outfit_items, "batch_outfit_items")
        users = _item_array(batch_users, "batch_users").ravel()
        if batch.ndim != 2 or batch.shape[0] == 0 or batch.shape[0] != users.shape[0]:
            raise ValueError(f"batch_outfit_items [B, S] and batch_users [B] must agree and be "
                             f"non-empty, got {batch.shape} and {users.shape}")
        if self.n_hard and (users.min() < 0 or users.max() >= self.dataset.n_users):
            raise ValueError(f"batch_users must lie in 0..{self.dataset.n_users - 1}, got "
                             f"{int(users.min())}..{int(users.max())}")
        rng = _step_rng(self.seed, epoch, step)
        if self.mode == "per_pair":
            negatives, owners = self._per_pair(batch, users, rng)
        else:
            negatives, owners = self._shared(batch, users, rng)
        return (negatives, owners) if return_owners else negatives

    def _shared(self, batch: np.ndarray, users: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        n_random = self.n_negatives - self.n_hard
        templates = batch[rng.integers(batch.shape[0], size=n_random)]
        if self.reject_rule == "own_train":
            # a shared negative must be no batch user's own training positive: check it against
            # each of them (one row per negative and batch user)
            random_part = self._mixtures_rejecting_batch_users(templates, users, rng)
        else:
            random_part = random_mixtures(self.dataset, templates, self.split, rng,
                                          reject=self.reject, pools=self.pools)
        owners = np.full(self.n_negatives, -1, dtype=np.int64)
        if not self.n_hard:
            return random_part, owners
        hard = self._hard
        in_batch = np.zeros(self.dataset.n_users, dtype=bool)
        in_batch[users] = True
        outside_batch = np.flatnonzero(~in_batch[hard.owner])
        if outside_batch.size:
            outfits = hard.outfits[outside_batch[rng.integers(outside_batch.size, size=self.n_hard)]]
        else:
            anchors = users[rng.integers(users.size, size=self.n_hard)]
            outfits = hard.draw_excluding_users(anchors, rng)
        owners[:self.n_hard] = self.dataset.outfit_user[outfits]
        return np.concatenate([self.dataset.outfit_items[outfits], random_part]), owners

    def _mixtures_rejecting_batch_users(self, templates, users, rng) -> np.ndarray:
        batch_users = np.unique(users)
        out = random_mixtures(self.dataset, templates, self.split, rng, reject=())
        for _ in range(MAX_REDRAWS):
            keys = _user_outfit_keys(np.tile(batch_users, len(out)),
                                     np.repeat(outfit_hashes(out), batch_users.size))
            bad = _in_sorted(keys, self.reject).reshape(len(out), batch_users.size).any(axis=1)
            if not bad.any():
                return out
            out[bad] = random_mixtures(self.dataset, templates[bad], self.split, rng, reject=())
        raise DatasetError(f"could not draw shared negatives that are no batch user's own "
                           f"{self.split!r} positive after {MAX_REDRAWS} redraws")

    def _per_pair(self, batch: np.ndarray, users: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        B, S = batch.shape
        n_random = self.n_negatives - self.n_hard
        out = np.empty((B, self.n_negatives, S), dtype=np.int64)
        owners = np.full((B, self.n_negatives), -1, dtype=np.int64)
        if self.n_hard:
            outfits = self._hard.draw_excluding_users(np.repeat(users, self.n_hard), rng)
            out[:, :self.n_hard] = self.dataset.outfit_items[outfits].reshape(B, self.n_hard, S)
            owners[:, :self.n_hard] = self.dataset.outfit_user[outfits].reshape(B, self.n_hard)
        if n_random:
            # each pair's mixtures keep its own positive's layout (as the evaluation candidates do)
            templates = np.repeat(batch, n_random, axis=0)
            if self.reject_rule == "own_train":
                mixtures = random_mixtures(self.dataset, templates, self.split, rng, reject=self.reject,
                                           pools=self.pools, reject_users=np.repeat(users, n_random))
            else:
                mixtures = random_mixtures(self.dataset, templates, self.split, rng,
                                           reject=self.reject, pools=self.pools)
            out[:, self.n_hard:] = mixtures.reshape(B, n_random, S)
        return out, owners


# --------------------------------------------------------------------------------------------
# split invariants


def check_split_invariants(dataset: OutfitDataset) -> None:
    """Raise :class:`DatasetError` if a split invariant of paper §4.1.1 is broken.

    * No item of a trained user's test outfits appears in that user's training outfits.
    * For synthetic data (``meta["source"] == "synthetic"``) each trained user's
      train/val_teacher/val_student/test counts are :func:`split_sizes` of their outfit count
      (real data keep their released split).
    """
    items, users, I = dataset.outfit_items, dataset.outfit_user, dataset.n_items
    trained = dataset.user_pool[users] == 0

    def user_item_keys(split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(dataset.split_mask(split) & trained)
        present = items[rows] >= 0
        keys = users[rows, None].astype(np.int64) * I + items[rows]
        return keys[present], np.broadcast_to(rows[:, None], present.shape)[present]

    train_keys, train_rows = user_item_keys("train")
    test_keys, test_rows = user_item_keys("test")
    clash = np.isin(test_keys, train_keys)
    if clash.any():
        key = int(test_keys[clash][0])
        u, i = divmod(key, I)
        o_test = int(test_rows[clash][0])
        o_train = int(train_rows[train_keys == key][0])
        raise DatasetError(
            f"{dataset.name}: item {i} of user {u}'s test outfit {o_test} also occurs in their "
            f"training outfit {o_train}; no item of a user's test outfits may appear in their "
            f"training outfits (paper §4.1.1). Re-split that user's outfits")

    if dataset.meta.get("source") != "synthetic":
        return
    n_splits = len(SPLITS)
    counts = np.bincount(users.astype(np.int64) * n_splits + dataset.outfit_split,
                         minlength=dataset.n_users * n_splits).reshape(dataset.n_users, n_splits)
    names = ("train", "val_teacher", "val_student", "test")
    for u in dataset.trained_users:
        total = int(counts[u, [split_index(n) for n in names]].sum())
        if total == 0:
            continue
        expected = split_sizes(total)
        got = {n: int(counts[u, split_index(n)]) for n in names}
        if got != expected:
            raise DatasetError(f"{dataset.name}: user {int(u)} has split counts {got} for "
                               f"{total} outfits, expected {expected} (split_sizes, 9:2:2 with "
                               f"validation halved); re-split that user's outfits")
