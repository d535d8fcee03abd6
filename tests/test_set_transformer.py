"""Set Transformer properties (eqs. 1-8): order invariance, masked padding, gradients, and
agreement with a naive per-head reference of eqs. (1)-(3)."""

import math

import pytest
import torch

from fndkit.models.set_transformer import PMA, SAB, MultiHeadAttention, SetTransformer


def _model(dim=16, heads=4, seed=0):
    torch.manual_seed(seed)
    return SetTransformer(dim=dim, heads=heads).double()


def _naive_multihead(mha: MultiHeadAttention, q, k, v, key_mask=None):
    """Eqs. (1)-(3) one sample and one head at a time, with W_i sliced out of the stacked maps."""
    d, h = mha.dim, mha.heads
    dh = d // h
    out = torch.zeros(q.shape[0], q.shape[1], d, dtype=q.dtype)
    for b in range(q.shape[0]):
        keep = torch.arange(k.shape[1]) if key_mask is None else torch.nonzero(key_mask[b]).flatten()
        heads = []
        for i in range(h):
            w_q = mha.w_q.weight[i * dh:(i + 1) * dh].T   # W_i^Q: d x d/h
            w_k = mha.w_k.weight[i * dh:(i + 1) * dh].T
            w_v = mha.w_v.weight[i * dh:(i + 1) * dh].T
            qi, ki, vi = q[b] @ w_q, k[b, keep] @ w_k, v[b, keep] @ w_v
            attention = torch.softmax(qi @ ki.T / math.sqrt(dh), dim=-1) @ vi   # eq. (1)
            heads.append(attention)                                            # eq. (2)
        out[b] = torch.cat(heads, dim=-1) @ mha.w_m.weight.T                   # eq. (3)
    return out


@pytest.mark.parametrize("dim,heads", [(8, 2), (16, 4), (12, 3)])
def test_multihead_matches_naive_per_head_reference(dim, heads):
    torch.manual_seed(dim + heads)
    mha = MultiHeadAttention(dim, heads).double()
    q, k, v = torch.randn(3, 2, dim).double(), torch.randn(3, 5, dim).double(), torch.randn(3, 5, dim).double()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(mha(q, k, v), _naive_multihead(mha, q, k, v), atol=1e-12)
        assert torch.allclose(mha(q, k, v, key_mask=mask), _naive_multihead(mha, q, k, v, mask),
                              atol=1e-12)


def test_sab_and_pma_follow_eqs_4_to_8():
    torch.manual_seed(1)
    dim = 8
    x = torch.randn(2, 3, dim).double()
    sab, pma = SAB(dim, 2).double(), PMA(dim, 2).double()
    with torch.no_grad():
        h = sab.norm_attention(x + _naive_multihead(sab.attention, x, x, x))              # eq. 4
        expected_sab = sab.norm_feed_forward(h + torch.relu(sab.feed_forward[0](h)))      # eq. 5
        assert torch.allclose(sab(x), expected_sab, atol=1e-12)
        s = pma.seed.expand(2, 1, dim)
        z = pma.norm_attention(s + _naive_multihead(pma.attention, s, x, x))               # eq. 7
        expected_o = pma.norm_feed_forward(z + torch.relu(pma.feed_forward[0](z)))         # eq. 8
        assert torch.allclose(pma(x), expected_o.squeeze(1), atol=1e-12)


def test_output_shape_and_permutation_invariance():
    model = _model()
    x = torch.randn(4, 5, 16).double()
    out = model(x)
    assert out.shape == (4, 16)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(model(x[:, perm]), out, atol=1e-10)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 4, dtype=torch.bool)
    assert torch.allclose(model(x[:, perm], mask[:, perm]), model(x, mask), atol=1e-10)


@pytest.mark.parametrize("garbage", ["random", "huge", "nan"])
def test_masked_padding_changes_nothing(garbage):
    model = _model(dim=8, heads=2, seed=3)
    x = torch.randn(3, 3, 8).double()
    reference = model(x)
    pad = {"random": torch.randn(3, 2, 8).double() * 10,
           "huge": torch.full((3, 2, 8), 1e30).double(),
           "nan": torch.full((3, 2, 8), float("nan")).double()}[garbage]
    padded = torch.cat([x, pad], dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 3, dtype=torch.bool)
    out = model(padded, mask)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, reference, atol=1e-10)
    # padding in the middle, rows of different sizes (variable-size outfits)
    interleaved = torch.stack([x[0, 0], pad[0, 0], x[0, 1], x[0, 2], pad[0, 1]])[None]
    mask_i = torch.tensor([[1, 0, 1, 1, 0]], dtype=torch.bool)
    assert torch.allclose(model(interleaved, mask_i), reference[:1], atol=1e-10)
    short = torch.cat([x[1:2, :2], pad[1:2]], dim=1)
    assert torch.allclose(model(short, torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)),
                          model(x[1:2, :2]), atol=1e-10)


def test_gradients_reach_every_parameter():
    model = _model(dim=8, heads=2, seed=4)
    x = torch.randn(3, 4, 8).double().requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    target = torch.randn(3, 8).double()
    ((model(x, mask) - target) ** 2).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    assert x.grad[1, 2:].abs().sum() == 0  # padded items get no gradient either


def test_fully_masked_row_raises():
    model = _model(dim=8, heads=2)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        model(torch.randn(2, 3, 8).double(), mask)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        SetTransformer(dim=10, heads=4)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(6, 4)
    model = _model(dim=8, heads=2)
    with pytest.raises(ValueError, match=r"\[B, n, 8\]"):
        model(torch.randn(2, 3, 6).double())
    with pytest.raises(ValueError, match="mask"):
        model(torch.randn(2, 3, 8).double(), torch.ones(2, 3))
