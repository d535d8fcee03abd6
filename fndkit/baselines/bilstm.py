"""Bi-LSTM (Han, Wu, Jiang and Davis, "Learning Fashion Compatibility with Bidirectional LSTMs",
ACM MM 2017; public code xthan/polyvore, ``polyvore/polyvore_model_bi.py`` and
``fashion_compatibility.py``). Non-personalized.

The outfit is a sequence in slot order: top → (second top) → bottom → shoes. Item features are
mapped into the LSTM's input space (e_k = W_e f_k); a forward LSTM reads e_1..e_L and after each
item predicts the next one, a backward LSTM reads e_L..e_1 and predicts the previous one; each
direction's last step predicts a learned END token. A prediction is a softmax over a vocabulary of
items: the logit of item v at step t is cos(W_o h_t, e_v) / τ (the temperature of §4.1.3 on a
cross-entropy loss). The compatibility score is the negated mean cross-entropy of both directions,

    s(o) = −( mean_t CE_forward(t) + mean_t CE_backward(t) )

as the public code computes it for compatibility prediction. The vocabulary: in training (and in
``score_items``) the distinct items of the batch, as in the code's in-batch softmax; in evaluation
(``score_cached``) every item of the evaluation's item cache, as the code scores "against the whole
test set". The objective ``bi-lstm`` minimises −s over the batch's positive outfits; it needs no
negatives. The visual-semantic embedding loss of the paper needs text and is left out; the temperature
the model was trained with is kept in its state dict (``temperature``) so evaluation uses it too.

As the public training (``configuration.py``, ``polyvore_model_bi.py``): dropout on each LSTM's
inputs and outputs with keep probability 0.7 in training (the cells' ``DropoutWrapper``; none in
evaluation), and the gradients clipped to a global L2 norm of 5.0 (``optimize_loss(clip_gradients=
5.0)``; ``grad_clip_norm``, read by :func:`fndkit.train.fit`).

Departures that remain, against the public code:

- Logits. The code's logit is a raw dot product of the step's output with a target's embedding
  (no normalisation, no temperature); here cos(W_o h_t, e_v) / τ.
- END. The code's END target is a zero vector (its logit is 0 at every step, in training and in
  ``fashion_compatibility.py``'s test softmax); here a learned vector ``end``.
- The training softmax's classes. The code scores each step against the targets of every step of
  the minibatch (one class per (outfit, step): an item worn in two outfits is two classes, every
  outfit's END its own zero row) and the label is the step's own row; here the classes are the
  batch's *distinct* items plus END.
- Optimiser: fndkit's shared loop (SGD, lr 0.003 at batch 32, the plateau schedule) where the
  code runs SGD at lr 0.2, batch 10, halved every 2 epochs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.contract import ItemFeatureCache, evaluating
from ..models.registry import register_model
from ..objectives import Objective, register_objective
from .common import NonPersonalized, normalized


def _along_rows(index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return index[..., None].expand(-1, -1, values.shape[-1]) if values.ndim == 3 else index


def compact(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real entries ([M, S] or [M, S, d]) to the front, in slot order:
    returns (values, lengths [M])."""
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    return torch.gather(values, 1, _along_rows(order, values)), mask.sum(1)


def reverse_real(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``lengths[m]`` entries of each compacted row; padding stays behind."""
    t = torch.arange(values.shape[1], device=values.device)[None, :]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return torch.gather(values, 1, _along_rows(index, values))


@register_model("bi-lstm")
class BiLSTM(NonPersonalized):
    objective = "bi-lstm"
    grad_clip_norm = 5.0   # the public training: optimize_loss(clip_gradients=5.0), a global-norm clip
    dropout = 0.3          # the public LSTM cells' DropoutWrapper, keep probability 0.7 on inputs and outputs
    # lr 0.003: on the demo's validation half (seed 0, 2 epochs) 0.567 AUC against 0.543 at 0.01,
    # whose loss oscillated, and 0.491 at τ 0.3
    train_defaults = {"lr": 0.003, "tau": 0.1}
    search_space = {"lr": [0.001, 0.003, 0.01], "tau": [0.05, 0.1, 0.3]}
    source = ("Han et al., ACM MM 2017 (Bi-LSTM); xthan/polyvore polyvore/polyvore_model_bi.py, "
              "fashion_compatibility.py")

    def __init__(self, backbone: str, n_users: int, dim: int = 128, weights: str | None = None,
                 slot_categories: Sequence[int] | None = None):
        super().__init__(backbone, n_users, dim, weights, slot_categories)
        self.embed = nn.Linear(dim, dim)                     # W_e: item feature -> LSTM space
        self.forward_lstm = nn.LSTM(dim, dim, batch_first=True)
        self.backward_lstm = nn.LSTM(dim, dim, batch_first=True)
        self.forward_out = nn.Linear(dim, dim)               # W_o of each direction
        self.backward_out = nn.Linear(dim, dim)
        self.end = nn.Parameter(torch.randn(dim) / dim ** 0.5)
        self.lstm_dropout = nn.Dropout(self.dropout)         # training only (eval: identity)
        self.register_buffer("temperature", torch.tensor(0.1))

    def _direction(self, lstm: nn.LSTM, out: nn.Linear, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        inputs = self.lstm_dropout(inputs)
        packed = nn.utils.rnn.pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, _ = lstm(packed)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True, total_length=inputs.shape[1])
        return normalized(out(self.lstm_dropout(hidden)))

    def sequence_scores(self, features: torch.Tensor, mask: torch.Tensor, vocabulary: torch.Tensor,
                        targets: torch.Tensor) -> torch.Tensor:
        """s(o) = −(mean forward CE + mean backward CE) for each outfit.

        features [M, S, d], mask [M, S]: the outfits; vocabulary [V, d]: item features of the
        softmax's items; targets [M, S]: row of each slot's item in ``vocabulary`` (-1 padding).
        """
        if not mask.any(1).all():
            raise ValueError("an outfit with no item has no sequence; drop empty rows")
        inputs, lengths = compact(self.embed(features), mask)
        target, _ = compact(targets, mask)
        vocab = normalized(torch.cat([self.embed(vocabulary), self.end[None, :]]))   # END is row V
        end = vocab.shape[0] - 1
        s = inputs.shape[1]
        t = torch.arange(s, device=inputs.device)[None, :]
        real = t < lengths[:, None]
        # forward: after item t predict item t+1; the last real step predicts END
        nxt = torch.cat([target[:, 1:], target.new_full((target.shape[0], 1), -1)], 1)
        fwd_target = torch.where(t == lengths[:, None] - 1, torch.full_like(nxt, end), nxt)
        rev_inputs, rev_target = reverse_real(inputs, lengths), reverse_real(target, lengths)
        prev = torch.cat([rev_target[:, 1:], rev_target.new_full((target.shape[0], 1), -1)], 1)
        bwd_target = torch.where(t == lengths[:, None] - 1, torch.full_like(prev, end), prev)
        total = inputs.new_zeros(inputs.shape[0])
        for lstm, out, seq, tgt in ((self.forward_lstm, self.forward_out, inputs, fwd_target),
                                    (self.backward_lstm, self.backward_out, rev_inputs, bwd_target)):
            logits = self._direction(lstm, out, seq, lengths) @ vocab.T / self.temperature   # [M, S, V+1]
            ce = F.cross_entropy(logits.reshape(-1, vocab.shape[0]), tgt.clamp(min=0).reshape(-1),
                                 reduction="none").reshape(tgt.shape)
            total = total + (ce * real).sum(1) / lengths
        return -total

    def outfit_scores(self, features, mask):
        """s(o) with the distinct items of ``features`` as the vocabulary."""
        flat = features[mask]
        _, inverse = torch.unique(flat, dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), flat.shape[0], device=flat.device, dtype=torch.long)
        first = first.scatter_reduce(0, inverse, torch.arange(flat.shape[0], device=flat.device), "amin")
        targets = torch.full(mask.shape, -1, dtype=torch.long, device=features.device)
        targets[mask] = inverse
        return self.sequence_scores(features, mask, flat[first], targets)

    @torch.no_grad()
    def score_cached(self, users, items, cache: ItemFeatureCache, batch_size: int = 512):
        """s(o) with every item of the cache as the vocabulary (the code's whole-test-set softmax)."""
        items = np.asarray(items, dtype=np.int64)
        chunks = []
        with evaluating(self):
            for lo in range(0, len(items), batch_size):
                block = items[lo:lo + batch_size]
                features, mask = cache.lookup(block)
                rows = np.full(block.shape, -1, dtype=np.int64)
                rows[block >= 0] = cache.rows(block[block >= 0])
                chunks.append(self.sequence_scores(features, mask, cache.features,
                                                   torch.as_tensor(rows, device=features.device)))
        return torch.cat(chunks) if chunks else torch.zeros(0, device=self.device)


class BiLSTMObjective(Objective):
    """Mean over the batch's positive outfits of forward + backward next-item cross-entropy."""

    name = "bi-lstm"

    def __init__(self, tau: float = 0.1):
        self.tau = tau

    def check_model(self, model):
        if not hasattr(model, "sequence_scores"):
            raise ValueError(f"loss='bi-lstm' trains the bi-lstm model, not {type(model).__name__}; "
                             f"use loss='bpr' for this model")
        model.temperature.fill_(self.tau)   # evaluation scores with the temperature it trains with

    def __call__(self, model, batch):
        loss = -model.outfit_scores(*batch.features(model)["positives"]).mean()
        return loss, {"loss": loss.item()}


@register_objective("bi-lstm")
def _bilstm(cfg, **_) -> Objective:
    return BiLSTMObjective(cfg.tau)
