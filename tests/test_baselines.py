"""The seven baselines of Table 2: each one's defining property against a hand computation or a
naive reference, the model contract's code paths agreeing with each other, every baseline training
and evaluating on tiny data through the stage (and rebuilding from its checkpoint alone), cold start
by anchor search and for non-personalized models, and notebook 07 on a run folder 00 filled."""

import json
import math

import numpy as np
import papermill as pm
import pytest
import torch
import torch.nn.functional as F

from fndkit import stages
from fndkit.baselines import BASELINES, catalogue
from fndkit.baselines.common import sample_triplets, slot_categories, slot_pairs
from fndkit.baselines.lpae import LOGDET_WEIGHT, LPAEEncoder, anchor_search
from fndkit.baselines.outfitnet import OutfitNetObjective
from fndkit.baselines.type_aware import type_pair_index
from fndkit.config import ConfigError, DataConfig
from fndkit.data.sampling import NegativeSampler
from fndkit.evaluate import item_cache
from fndkit.losses import bpr_loss
from fndkit.metrics import ranking_metrics_all
from fndkit.models.contract import ItemFeatureCache, make_image_fn
from fndkit.models.registry import MODELS, build_model, load_model, model_from_config
from fndkit.objectives import OBJECTIVES, TrainBatch, make_objective
from fndkit.plans.execute import NOTEBOOK_DIR
from fndkit.rundir import RunFolder, StageError
from fndkit.stages import training
from fndkit.stages.cold_start import cold_setup, held_out_rows, run as run_cold_start, table3
from fndkit.models.set_transformer import SetTransformer
from fndkit.train import Callback, fit

D = 16


def tiny_model(name, n_users=6, **kw):
    torch.manual_seed(0)
    return build_model(name, backbone="cnn-small", n_users=n_users, dim=D, heads=2, **kw)


def outfits(m=5, s=3, seed=0, missing=()):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(m, s, D, generator=g)
    mask = torch.ones(m, s, dtype=torch.bool)
    for row, slot in missing:
        mask[row, slot] = False
        f[row, slot] = 0
    return f, mask


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder 00_data filled (tiny), with three baselines trained one short epoch each."""
    run = tmp_path_factory.mktemp("baselines_run")
    stages.prepare_data(run, DataConfig(scale="tiny", seed=0))
    for name in ("lpae-g", "type-aware", "fhn"):
        cfg = training.baseline_config(run, name, epochs=1, max_steps_per_epoch=3, dim=D, heads=2, device="cpu")
        training.run(run, training.baseline_name(cfg), cfg, progress=False)
    return run


# ----------------------------------------------------------------------------- registry


def test_every_baseline_is_registered_with_its_objective():
    assert set(BASELINES) <= set(MODELS)
    table = catalogue()
    assert list(table["model"]) == list(BASELINES)
    for row in table.itertuples():
        assert row.objective in OBJECTIVES, row.model
        assert row.source, row.model
    personalized = dict(zip(table["model"], table["personalized"]))
    assert [m for m in BASELINES if not personalized[m]] == ["type-aware", "sce-net", "bi-lstm"]
    assert dict(zip(table["model"], table["cold start"]))["lpae-u"] == "anchor-search"


@pytest.mark.parametrize("name", BASELINES)
def test_config_rebuilds_the_same_model(name):
    model = tiny_model(name)
    twin = model_from_config(json.loads(json.dumps(model.config())))
    twin.load_state_dict(model.state_dict())
    f, mask = outfits(missing=[(1, 0)])
    users = torch.tensor([0, 1, 2, 3, 4])
    model.eval(), twin.eval()
    assert torch.allclose(model.score_items(users, f, mask), twin.score_items(users, f, mask), atol=1e-6)
    assert twin.config() == model.config()


def test_unknown_config_key_is_refused():
    cfg = tiny_model("fhn").config()
    with pytest.raises(ValueError, match=r"\['anchors'\] that FHN does not take"):
        model_from_config({**cfg, "anchors": 3})


def test_slot_layout():
    assert slot_categories(3) == (0, 1, 2) and slot_categories(4) == (0, 0, 1, 2)
    with pytest.raises(ValueError, match="5 slots have no known layout"):
        slot_categories(5)
    assert [tuple(x) for x in slot_pairs((0, 0, 1, 2), distinct=True)] == [(0, 0, 1, 1, 2), (2, 3, 2, 3, 3)]


# ----------------------------------------------------------------------------- contract paths


@pytest.mark.parametrize("name", [n for n in BASELINES if n != "bi-lstm"])
def test_pair_scores_agree_with_score_items_in_every_negative_layout(name):
    """Shared [N, S, d], per pair [B, N, S, d] and unique + negative_index give what score_items
    gives row by row (the overrides exist only for speed)."""
    model = tiny_model(name).eval()
    users = torch.tensor([0, 3, 5])
    pos = outfits(3, seed=1, missing=[(2, 1)])
    neg = outfits(4, seed=2)
    b, n = 3, 4
    p, ng = model.pair_scores(users, pos, neg)
    rows = model.score_items(users.repeat_interleave(n), neg[0].repeat(b, 1, 1), neg[1].repeat(b, 1))
    assert torch.allclose(p, model.score_items(users, *pos), atol=1e-5)
    assert torch.allclose(ng, rows.reshape(b, n), atol=1e-5)
    per_pair = (neg[0][None].expand(b, -1, -1, -1), neg[1][None].expand(b, -1, -1))
    assert torch.allclose(model.pair_scores(users, pos, per_pair)[1], ng, atol=1e-5)
    index = torch.tensor([[3, 2, 1, 0]] * b)
    assert torch.allclose(model.pair_scores(users, pos, neg, negative_index=index)[1], ng.flip(1), atol=1e-5)


@pytest.mark.parametrize("name", [n for n in BASELINES if n != "bi-lstm"])
def test_score_cached_agrees_with_forward(name, tiny):
    model = tiny_model(name, n_users=tiny.n_users).eval()
    cand = tiny.candidates["test/random"]
    image_fn = make_image_fn(tiny.images, None, "cpu")
    cache = ItemFeatureCache(model, cand.items, image_fn)
    cached = model.score_cached(cand.user[:40], cand.items[:40], cache, batch_size=7)
    direct = model(torch.as_tensor(cand.user[:40]), torch.as_tensor(cand.items[:40]), image_fn)
    assert torch.allclose(cached, direct, atol=1e-5)


@pytest.mark.parametrize("name", ["type-aware", "sce-net", "bi-lstm"])
def test_non_personalized_model_gives_every_user_the_same_score(name):
    model = tiny_model(name).eval()
    f, mask = outfits(4, missing=[(0, 0)])
    a = model.score_items(torch.tensor([0, 0, 0, 0]), f, mask)
    b = model.score_items(torch.tensor([5, 4, 3, 2]), f, mask)
    assert torch.equal(a, b)
    _, neg = model.pair_scores(torch.tensor([1, 2]), outfits(2, seed=3), (f, mask))
    assert torch.equal(neg[0], neg[1])
    assert not model.personalized


# ----------------------------------------------------------------------------- LPAE


def lpae_reference(model, users, f, mask):
    """Σ_k cos(W z, a_{u,k}) (+ shared anchors) by a loop over anchors."""
    z = model.transform(model.set_transformer(f, mask))
    out = []
    for row, u in enumerate(users.tolist()):
        anchors = list(model.user_anchors[u])
        if model.shared_anchors is not None:
            anchors += list(model.shared_anchors)
        out.append(sum(F.cosine_similarity(z[row], a, dim=0) for a in anchors))
    return torch.stack(out)


@pytest.mark.parametrize("name,own,shared", [("lpae-u", 64, 0), ("lpae-g", 32, 32)])
def test_lpae_score_is_a_sum_of_anchor_cosines(name, own, shared):
    model = tiny_model(name).eval()
    assert model.user_anchors.shape == (6, own, D)
    assert (0 if model.shared_anchors is None else model.shared_anchors.shape[0]) == shared
    f, mask = outfits(4, missing=[(3, 2)])
    users = torch.tensor([0, 1, 1, 5])
    assert torch.allclose(model.score_items(users, f, mask), lpae_reference(model, users, f, mask), atol=1e-4)


def test_lpae_g_shared_anchors_are_shared_across_users():
    model = tiny_model("lpae-g").eval()
    f, mask = outfits(3)
    u0, u1 = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    gap = model.score_items(u0, f, mask) - model.score_items(u1, f, mask)
    with torch.no_grad():
        model.shared_anchors.mul_(-3.0).add_(0.5)   # moves every user's score …
    moved = model.score_items(u0, f, mask)
    assert (moved - lpae_reference(model, u0, f, mask)).abs().max() < 1e-4
    # … by the same amount: the difference between two users is their own anchors' alone
    assert torch.allclose(model.score_items(u0, f, mask) - model.score_items(u1, f, mask), gap, atol=1e-5)
    # a gradient step on user 0's loss alone changes user 1's scores through the shared anchors
    model.train()
    model.zero_grad()
    model.score_items(u0, f, mask).sum().backward()
    assert model.user_anchors.grad[1].abs().sum() == 0
    assert model.shared_anchors.grad.abs().sum() > 0


def test_lpae_logdet_regularizer_closed_form():
    model = tiny_model("lpae-u", user_anchors=4)
    with torch.no_grad():
        model.user_anchors[0] = torch.eye(4, D)                       # orthonormal: tr − logdet = K
        model.user_anchors[1] = torch.eye(4, D) * 2.0                 # G = 4 I: 4·4 − 4·log 4
    reg0 = model.anchor_regularizer(torch.tensor([0]))
    reg1 = model.anchor_regularizer(torch.tensor([1]))
    assert reg0.item() == pytest.approx(4.0 + 4 * 1e-4, abs=1e-3)
    assert reg1.item() == pytest.approx(16.0 - 4 * math.log(4.0), abs=1e-3)
    assert model.anchor_regularizer(torch.tensor([0, 1])).item() == pytest.approx((reg0 + reg1).item() / 2, abs=1e-4)


def test_lpae_objective_is_bpr_plus_logdet(tiny):
    model = tiny_model("lpae-u", n_users=tiny.n_users).eval()   # eval: the encoder's dropout off
    ids = tiny.outfits_of("train")[:6]
    negatives = NegativeSampler(tiny, n_negatives=5, seed=0).sample(tiny.outfit_items[ids], tiny.outfit_user[ids], 0, 0)
    batch = TrainBatch(torch.as_tensor(tiny.outfit_user[ids]), tiny.outfit_items[ids], negatives,
                       make_image_fn(tiny.images, None, "cpu"))
    cfg = training.TrainConfig(model="lpae-u", loss="lpae", dim=D, heads=2, tau=0.3)
    loss, stats = make_objective(cfg)(model, batch)
    pos, neg = batch.pair_scores(model)
    expected = bpr_loss(pos, neg, tau=0.3) + LOGDET_WEIGHT * model.anchor_regularizer(batch.users)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert stats["rank_loss"] == pytest.approx(bpr_loss(pos, neg, tau=0.3).item(), abs=1e-5)
    with pytest.raises(ValueError, match="loss='lpae' trains LPAE models"):
        make_objective(cfg).check_model(tiny_model("fhn"))


def test_anchor_search_picks_the_anchors_closest_to_the_revealed_outfits():
    pool = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.7, 0.7, 0]]), dim=-1)
    # user 0 revealed two outfits; mean cosines with the pool: 0.914, 0.352, 0, 0.903
    # user 1 revealed one outfit near the diagonal (twice): 0.640, 0.768, 0, 0.996
    revealed = F.normalize(torch.tensor([[[1.0, 0.2, 0], [0.8, 0.5, 0]], [[1.0, 1.2, 0], [1.0, 1.2, 0]]]), dim=-1)
    assert anchor_search(revealed, pool, 2).tolist() == [[0, 3], [3, 1]]
    assert anchor_search(revealed[:, :1], pool, 1).tolist() == [[0], [3]]
    with pytest.raises(ValueError, match="needs k=5 anchors but the pool holds 4"):
        anchor_search(revealed, pool, 5)
    # the sensitivity variant ranks an anchor by its best cosine over the revealed outfits: for
    # outfits (1, 0, 0) and (0, .6, .8) the means are .5, .3, .4, .566 and the maxima 1, .6, .8, .707
    two = torch.tensor([[[1.0, 0, 0], [0, 0.6, 0.8]]])
    assert anchor_search(two, pool, 2).tolist() == [[3, 0]]
    assert anchor_search(two, pool, 2, reduce="max").tolist() == [[0, 2]]
    with pytest.raises(ValueError, match="reduce='sum'"):
        anchor_search(revealed, pool, 1, reduce="sum")


def test_lpae_cold_start_scores_with_the_searched_anchors(tiny):
    model = tiny_model("lpae-g", n_users=tiny.n_users).eval()
    cold = tiny.outfit_items[tiny.outfits_of("cold")]
    cache = ItemFeatureCache(model, cold, make_image_fn(tiny.images, None, "cpu"))
    revealed, candidates, owner = cold[None, :2], cold[2:9], np.zeros(7, dtype=np.int64)
    got = model.cold_start_scores(revealed, candidates, owner, cache, tiny.trained_users)
    # reference: pick the anchors by hand, then score as a user holding them (shared ones kept)
    rev_vec, _ = model.outfit_parts_cached(cold[:2], cache)
    pool = F.normalize(model.user_anchors[torch.as_tensor(tiny.trained_users)].reshape(-1, D), dim=-1)
    top = (rev_vec @ pool.T).mean(0).argsort(descending=True)[:32]
    with torch.no_grad():
        model.user_anchors[0] = model.user_anchors[torch.as_tensor(tiny.trained_users)].reshape(-1, D)[top]
    expected = model.score_cached(np.zeros(7, dtype=np.int64), candidates, cache)
    assert torch.allclose(got, expected, atol=1e-5)


# ----------------------------------------------------------------------------- FHN


def test_fhn_score_is_user_term_plus_pair_term():
    model = tiny_model("fhn", slot_categories=(0, 0, 1, 2)).eval()
    with torch.no_grad():
        model.user_weight.uniform_(0.5, 1.5)
        model.pair_weight.uniform_(0.5, 1.5)
    f, mask = outfits(2, s=4, missing=[(1, 1)])
    users = torch.tensor([2, 4])
    codes = model.item_codes(f)
    u = torch.tanh(model.user_embedding(users))
    expected = []
    for row in range(2):
        real = [k for k in range(4) if mask[row, k]]
        user_term = torch.stack([(model.user_weight * u[row] * codes[row, k]).mean() for k in real]).mean()
        pairs = [(i, j) for i in real for j in real if i < j and (i, j) != (0, 1)]   # no top–top pair
        pair_term = torch.stack([(model.pair_weight * codes[row, i] * codes[row, j]).mean() for i, j in pairs]).mean()
        expected.append(user_term + pair_term)
    assert torch.allclose(model.score_items(users, f, mask), torch.stack(expected), atol=1e-5)


def test_fhn_pair_term_is_symmetric_in_item_order():
    """The same outfit with its slots in another order (categories moved along) scores the same."""
    model = tiny_model("fhn").eval()
    moved = tiny_model("fhn", slot_categories=(2, 0, 1)).eval()
    moved.load_state_dict(model.state_dict())
    f, mask = outfits(3)
    order = [2, 0, 1]
    users = torch.tensor([0, 1, 2])
    assert torch.allclose(model.score_items(users, f, mask), moved.score_items(users, f[:, order], mask[:, order]),
                          atol=1e-6)
    codes = model.item_codes(f)
    swapped = codes[:, [1, 0, 2]]
    assert torch.allclose(model.pair_term(codes, mask), model.pair_term(swapped, mask), atol=1e-6)


class Record(Callback):
    """What a test wants to see of the model at each epoch's end / after each step."""

    def __init__(self):
        self.scales, self.max_grad = [], 0.0

    def on_batch_end(self, t):   # the gradients the step just used (zeroed at the next step)
        self.max_grad = max([self.max_grad] + [p.grad.abs().max().item() for p in t.model.parameters()
                                               if p.grad is not None])

    def on_epoch_end(self, t):
        self.scales.append(float(getattr(t.model, "scale", torch.tensor(float("nan")))))


def short_fit(model, tiny, tmp_path, epochs=1, callbacks=()):
    cfg = training.TrainConfig(model=model.kind, loss=MODELS[model.kind].objective, backbone="cnn-small", dim=D,
                               heads=2, epochs=epochs, batch_size=8, max_steps_per_epoch=2, device="cpu",
                               patience=5, **MODELS[model.kind].train_defaults)
    return fit(model, tiny, cfg, tmp_path, make_objective(cfg), callbacks=callbacks, progress=False)


def test_fhn_tanh_scale_follows_the_square_root_of_one_plus_the_epoch(tiny, tmp_path):
    model = tiny_model("fhn", n_users=tiny.n_users)
    assert model.user_embedding.weight.std().item() == pytest.approx(1.0, rel=0.2)    # fndkit's N(0, 1)
    public = tiny_model("fhn", n_users=tiny.n_users, user_init_std=0.01)
    assert public.user_embedding.weight.std().item() == pytest.approx(0.01, rel=0.2)  # the public code's
    record = Record()
    short_fit(model, tiny, tmp_path, epochs=2, callbacks=[record])
    assert record.scales == pytest.approx([1.0, math.sqrt(2.0)])
    # the codes are tanh(s · x) at the scale in force
    f, mask = outfits(2)
    with torch.no_grad():
        model.scale.fill_(3.0)
        raw = model.item_encoders[0](f[:, 0])
    assert torch.allclose(model.item_codes(f)[:, 0], torch.tanh(3.0 * raw), atol=1e-6)
    # a checkpoint saved before the scale existed loads at s = 1
    old = {k: v for k, v in model.state_dict().items() if k != "scale"}
    fresh = tiny_model("fhn", n_users=tiny.n_users)
    fresh.load_state_dict(old)
    assert fresh.scale.item() == 1.0


def test_fit_clips_gradient_values_where_the_model_asks(tiny, tmp_path):
    """LPAE declares grad_clip_value 0.5 (its public training); fit reads the attribute of any model."""
    assert MODELS["lpae-u"].grad_clip_value == 0.5 and MODELS["fhn"].grad_clip_value is None
    maxima = {}
    for clip in (None, 1e-4):
        model = tiny_model("fhn", n_users=tiny.n_users)
        model.grad_clip_value = clip
        record = Record()
        short_fit(model, tiny, tmp_path / str(clip), callbacks=[record])
        maxima[clip] = record.max_grad
    assert maxima[1e-4] <= 1e-4 < maxima[None]


class GradNorm(Callback):
    """The largest global gradient norm a step used (after fit's clipping)."""

    def __init__(self):
        self.max_norm = 0.0

    def on_batch_end(self, t):
        grads = [p.grad.flatten() for p in t.model.parameters() if p.grad is not None]
        self.max_norm = max(self.max_norm, torch.cat(grads).norm().item())


def test_fit_clips_the_global_gradient_norm_where_the_model_asks(tiny, tmp_path):
    """Bi-LSTM declares grad_clip_norm 5.0 (its public training clips the global norm at 5);
    fit reads the attribute of any model."""
    assert MODELS["bi-lstm"].grad_clip_norm == 5.0 and MODELS["fhn"].grad_clip_norm is None
    norms = {}
    for clip in (None, 1e-4):
        model = tiny_model("fhn", n_users=tiny.n_users)
        model.grad_clip_norm = clip
        record = GradNorm()
        short_fit(model, tiny, tmp_path / str(clip), callbacks=[record])
        norms[clip] = record.max_norm
    assert norms[1e-4] <= 1e-4 * (1 + 1e-5) < norms[None]


def test_lpae_encoder_is_lpae_own_and_fnd_on_request():
    """LPAE's own set transformer by default (input embedding, 4 heads); FND's on request; a config
    saved before the option (it has 'heads') rebuilds FND's."""
    model = tiny_model("lpae-u").eval()
    assert isinstance(model.set_transformer, LPAEEncoder) and model.config()["encoder_heads"] == 4
    assert isinstance(model.set_transformer.embed[3], torch.nn.Dropout) and model.set_transformer.embed[3].p == 0.2
    f, mask = outfits(3, missing=[(2, 1)])
    z = model.encode_outfits(f, mask)
    order = [2, 0, 1]
    assert torch.allclose(z, model.encode_outfits(f[:, order], mask[:, order]), atol=1e-5)   # a set function
    garbage = f.clone()
    garbage[2, 1] = 1e3
    assert torch.allclose(z, model.encode_outfits(garbage, mask), atol=1e-5)                 # padding unseen
    fnd = tiny_model("lpae-u", encoder="fnd").eval()
    assert isinstance(fnd.set_transformer, SetTransformer) and fnd.set_transformer.heads == 8
    old_config = {**{k: v for k, v in fnd.config().items() if k not in ("encoder", "encoder_heads")}, "heads": 2}
    rebuilt = model_from_config(old_config)
    assert rebuilt.hparams["encoder"] == "fnd" and rebuilt.set_transformer.heads == 2
    with pytest.raises(ValueError, match="encoder='set'"):
        tiny_model("lpae-u", encoder="set")


# ----------------------------------------------------------------------------- OutfitNet


def test_outfitnet_attention_pools_item_scores():
    model = tiny_model("outfitnet").eval()
    f, mask = outfits(3, missing=[(0, 1)])
    users = torch.tensor([1, 2, 3])
    h = model.item_embeddings(f)
    u = model.user_embedding(users)
    alpha = model.attention(h, u, mask)
    assert torch.allclose(alpha.sum(1), torch.ones(3), atol=1e-6) and alpha[0, 1] == 0
    for row in range(3):
        logits = torch.stack([model.attention_w(torch.tanh(model.attention_v(torch.cat([h[row, k], u[row]]))))[0]
                              for k in range(3)])
        logits[~mask[row]] = -math.inf
        a = torch.softmax(logits, 0)
        s = torch.stack([F.cosine_similarity(u[row], h[row, k], dim=0) for k in range(3)])
        assert model.score_items(users, f, mask)[row].item() == pytest.approx((a * s).sum().item(), abs=1e-5)


def test_outfitnet_trains_compatibility_first_then_preference(tiny):
    model = tiny_model("outfitnet", n_users=tiny.n_users)
    ids = tiny.outfits_of("train")[:6]
    negatives = NegativeSampler(tiny, n_negatives=5, seed=0).sample(tiny.outfit_items[ids], tiny.outfit_user[ids], 0, 0)

    def batch(epoch):
        return TrainBatch(torch.as_tensor(tiny.outfit_user[ids]), tiny.outfit_items[ids], negatives,
                          make_image_fn(tiny.images, None, "cpu"), epoch=epoch)

    objective = OutfitNetObjective(tau=0.1, stage1_epochs=1)
    model.zero_grad()
    loss1, stats1 = objective(model, batch(0))
    loss1.backward()
    assert stats1["stage"] == 1 and model.user_embedding.weight.grad is None   # users untouched in stage 1
    enc = batch(0).features(model)
    pos = model.compatibility(*enc["positives"])
    neg = model.compatibility(*enc["negatives"])
    assert loss1.item() == pytest.approx(bpr_loss(pos, neg[None].expand(6, -1), tau=0.1).item(), abs=1e-5)
    loss2, stats2 = objective(model, batch(1))
    assert stats2["stage"] == 2
    assert loss2.item() == pytest.approx(bpr_loss(*batch(1).pair_scores(model), tau=0.1).item(), abs=1e-5)


# ----------------------------------------------------------------------------- Bi-LSTM


def lstm_steps(lstm, xs):
    """Hidden states of a one-layer nn.LSTM over xs [L, d], by its equations."""
    h = c = torch.zeros(lstm.hidden_size)
    out = []
    for x in xs:
        gates = lstm.weight_ih_l0 @ x + lstm.bias_ih_l0 + lstm.weight_hh_l0 @ h + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return out


def bilstm_reference(model, items, vocab):
    """−(mean forward CE + mean backward CE) of one outfit, items [L, d] (real items in order)."""
    emb = model.embed(items)
    table = F.normalize(torch.cat([model.embed(vocab), model.end[None]]), dim=-1)
    end = len(vocab)
    ids = [int(((vocab - x).abs().sum(1) == 0).nonzero()[0]) for x in items]
    total = 0.0
    for lstm, out, seq, targets in ((model.forward_lstm, model.forward_out, emb, ids[1:] + [end]),
                                    (model.backward_lstm, model.backward_out, emb.flip(0), ids[::-1][1:] + [end])):
        ces = []
        for h, t in zip(lstm_steps(lstm, seq), targets):
            logits = F.normalize(out(h), dim=0) @ table.T / model.temperature
            ces.append(-torch.log_softmax(logits, 0)[t])
        total = total + torch.stack(ces).mean()
    return -total


def test_bilstm_score_is_negated_mean_cross_entropy():
    model = tiny_model("bi-lstm").eval()
    model.temperature.fill_(0.5)
    f, mask = outfits(3, s=4, missing=[(1, 1), (2, 0)])   # variable size: absent tops
    f[2, 3] = f[0, 3]                                      # a shared shoe: one vocabulary entry
    got = model.outfit_scores(f, mask)
    vocab = torch.unique(f[mask], dim=0)
    for row in range(3):
        expected = bilstm_reference(model, f[row][mask[row]], vocab)
        assert got[row].item() == pytest.approx(expected.item(), abs=1e-4)


def test_bilstm_cached_scores_use_the_whole_cache_as_vocabulary(tiny):
    model = tiny_model("bi-lstm", n_users=tiny.n_users).eval()
    cand = tiny.candidates["test/random"]
    cache = ItemFeatureCache(model, cand.items, make_image_fn(tiny.images, None, "cpu"))
    got = model.score_cached(cand.user[:5], cand.items[:5], cache, batch_size=2)
    f, mask = cache.lookup(cand.items[:1])
    expected = bilstm_reference(model, f[0][mask[0]], cache.features)
    assert got[0].item() == pytest.approx(expected.item(), abs=1e-4)


def test_bilstm_objective_sets_the_temperature_it_evaluates_with():
    model = tiny_model("bi-lstm")
    cfg = training.TrainConfig(model="bi-lstm", loss="bi-lstm", dim=D, heads=2, tau=0.25)
    make_objective(cfg).check_model(model)
    assert model.temperature.item() == 0.25 and "temperature" in model.state_dict()
    with pytest.raises(ValueError, match="loss='bi-lstm' trains the bi-lstm model"):
        make_objective(cfg).check_model(tiny_model("lpae-u"))


# ----------------------------------------------------------------------------- Type-Aware, SCE-Net


def test_type_pair_index_is_one_space_per_unordered_category_pair():
    cats = torch.arange(3)
    x, y = cats.repeat_interleave(3), cats.repeat(3)
    index = type_pair_index(x, y).reshape(3, 3)
    assert torch.equal(index, index.T)
    assert index.tolist() == [[0, 1, 2], [1, 3, 4], [2, 4, 5]]


def test_type_aware_distance_and_outfit_score():
    model = tiny_model("type-aware").eval()
    f, mask = outfits(2, missing=[(1, 2)])
    expected = []
    for row in range(2):
        dists = []
        for i in range(3):
            for j in range(i + 1, 3):
                if mask[row, i] and mask[row, j]:
                    m = torch.relu(model.masks[type_pair_index(torch.tensor(i), torch.tensor(j))])
                    ei, ej = m * f[row, i], m * f[row, j]     # l2-normalised in the type space
                    dists.append(torch.sqrt(((ei / ei.norm() - ej / ej.norm()) ** 2).sum()))
        expected.append(-torch.stack(dists).mean())
    assert torch.allclose(model.outfit_scores(f, mask), torch.stack(expected), atol=1e-5)


def test_sce_net_weights_conditions_per_pair_symmetrically():
    model = tiny_model("sce-net").eval()
    x, y = outfits(1, s=2)[0][0]
    x, y = x[None], y[None]
    w = model.condition_weights(x, y)
    assert w.shape == (1, 4) and w.sum().item() == pytest.approx(1.0, abs=1e-6)
    cat = torch.zeros(1, dtype=torch.long)
    assert torch.allclose(model.pair_distance(x, y, cat, cat), model.pair_distance(y, x, cat, cat), atol=1e-6)
    one = tiny_model("sce-net", conditions=1).eval()
    m = torch.relu(one.masks[0])
    expected = (F.normalize(m * x, dim=-1) - F.normalize(m * y, dim=-1)).norm()
    assert one.pair_distance(x, y, cat, cat).item() == pytest.approx(expected.item(), abs=1e-5)


def test_type_aware_triplet_loss_is_invariant_to_the_feature_scale(tiny):
    """l2-normalised type-specific embeddings (the public --l2_embed): scaling every item feature
    changes neither a distance nor the triplet loss."""
    model = tiny_model("type-aware", n_users=tiny.n_users)
    ids = tiny.outfits_of("train")[:6]
    negatives = NegativeSampler(tiny, n_negatives=5, seed=0).sample(tiny.outfit_items[ids], tiny.outfit_user[ids], 0, 0)
    objective = make_objective(training.TrainConfig(model="type-aware", loss="triplet", dim=D, heads=2))
    losses, item_features = [], model.item_features
    for scale in (1.0, 0.1, 10.0):
        def scaled(items, image_fn, scale=scale):
            f, mask = item_features(items, image_fn)
            return f * scale, mask

        model.item_features = scaled   # every item feature × scale
        batch = TrainBatch(torch.as_tensor(tiny.outfit_user[ids]), tiny.outfit_items[ids], negatives,
                           make_image_fn(tiny.images, None, "cpu"))
        losses.append(objective(model, batch)[1]["triplet_loss"])
    assert losses[0] > 0.01
    assert losses[1] == pytest.approx(losses[0], abs=1e-5) and losses[2] == pytest.approx(losses[0], abs=1e-5)


def test_sce_net_uses_one_condition_weight_vector_per_triplet():
    """As the public code: d(a, p) and d(a, n) of one triplet are measured with the same condition
    weights, the mean of the branch over the triplet's two pairs; 'per_pair' keeps each its own."""
    model = tiny_model("sce-net").eval()
    (f, _), cat = outfits(4, s=3, seed=3), torch.zeros(4, dtype=torch.long)
    a, p, n = f[:, 0], f[:, 1], f[:, 2]
    d_ap, d_an = model.triplet_distances(a, p, n, cat, cat)
    w = 0.5 * (model.condition_weights(a, p) + model.condition_weights(a, n))

    def dist(x, y, weights):   # Σ_m w_m normalize(relu(m_m) ⊙ x), by a loop over conditions
        ex = sum(weights[:, m, None] * F.normalize(torch.relu(model.masks[m]) * x, dim=-1) for m in range(4))
        ey = sum(weights[:, m, None] * F.normalize(torch.relu(model.masks[m]) * y, dim=-1) for m in range(4))
        return (ex - ey).norm(dim=-1)

    assert torch.allclose(d_ap, dist(a, p, w), atol=1e-5) and torch.allclose(d_an, dist(a, n, w), atol=1e-5)
    # the pair weights differ, so per-pair weights would give other distances
    assert not torch.allclose(d_an, model.pair_distance(a, n, cat, cat), atol=1e-4)
    per_pair = tiny_model("sce-net", triplet_weights="per_pair").eval()
    got = per_pair.triplet_distances(a, p, n, cat, cat)
    assert torch.allclose(got[1], per_pair.pair_distance(a, n, cat, cat), atol=1e-6)
    with pytest.raises(ValueError, match="triplet_weights='both'"):
        tiny_model("sce-net", triplet_weights="both")


def test_triplet_regularisers_average_the_three_roles_as_the_public_codes():
    """Type-Aware and SCE-Net: embed weight · mean over (anchor, positive, negative) of
    ‖G_role‖_F / √T (the codes average the three roles' norms) + mask weight · mean L1 of the masks
    (relu'd). With rows of norm 1, 2 and 4 the embedding term is 7/3, not the pooled RMS √7."""
    from fndkit.baselines import scenet, type_aware
    from fndkit.baselines.common import role_rms

    t, cat = 5, torch.zeros(5, dtype=torch.long)
    unit = F.normalize(torch.randn(3, t, D, generator=torch.Generator().manual_seed(0)), dim=-1)
    general = unit * torch.tensor([1.0, 2.0, 4.0])[:, None, None]
    assert role_rms(general).item() == pytest.approx(7 / 3, abs=1e-5)
    assert role_rms(general[0]).item() == pytest.approx(1.0, abs=1e-5)   # one role
    ta = tiny_model("type-aware")
    mask_l1 = torch.relu(ta.masks[type_pair_index(cat, cat)]).sum(-1).mean()
    assert ta.regularizer(general, cat, cat).item() == pytest.approx(
        (type_aware.EMBED_WEIGHT * 7 / 3 + type_aware.MASK_WEIGHT * mask_l1).item(), abs=1e-6)
    sce = tiny_model("sce-net")
    assert sce.regularizer(general, cat, cat).item() == pytest.approx(
        (scenet.EMBED_WEIGHT * 7 / 3 + scenet.MASK_WEIGHT * torch.relu(sce.masks).sum(-1).mean()).item(), abs=1e-6)


def test_bilstm_drops_out_lstm_inputs_and_outputs_in_training_only():
    """The public cells' DropoutWrapper (keep 0.7 on inputs and outputs) in training; none in
    evaluation, where scores are deterministic (and equal the reference without dropout)."""
    model = tiny_model("bi-lstm")
    assert model.lstm_dropout.p == pytest.approx(0.3)
    f, mask = outfits(3, s=3)
    torch.manual_seed(0)
    model.train()
    a, b = model.outfit_scores(f, mask), model.outfit_scores(f, mask)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model.outfit_scores(f, mask), model.outfit_scores(f, mask))


def test_triplets_pair_items_worn_together_against_a_same_category_item():
    f, mask = outfits(2, missing=[(1, 0)])
    nf, nm = outfits(3, seed=5)
    anchor, pos, neg, ca, cp, valid = sample_triplets((f, mask), (nf, nm), (0, 1, 2))
    assert len(anchor) == 2 * 3 * 2 and int(valid.sum()) == 6 + 2
    for k in range(len(anchor)):
        row, (i, j) = k // 6, [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)][k % 6]
        assert torch.equal(anchor[k], f[row, i]) and torch.equal(pos[k], f[row, j])
        assert torch.equal(neg[k], nf[k % 3, j]) and (ca[k], cp[k]) == (i, j)
        assert bool(valid[k]) == bool(mask[row, i] and mask[row, j])


def test_triplet_objective(tiny):
    model = tiny_model("type-aware", n_users=tiny.n_users)
    ids = tiny.outfits_of("train")[:6]
    negatives = NegativeSampler(tiny, n_negatives=5, seed=0).sample(tiny.outfit_items[ids], tiny.outfit_user[ids], 0, 0)
    batch = TrainBatch(torch.as_tensor(tiny.outfit_user[ids]), tiny.outfit_items[ids], negatives,
                       make_image_fn(tiny.images, None, "cpu"))
    objective = make_objective(training.TrainConfig(model="type-aware", loss="triplet", dim=D, heads=2))
    loss, stats = objective(model, batch)
    enc = batch.features(model)
    a, p, n, ca, cp, valid = sample_triplets(enc["positives"], enc["negatives"], (0, 1, 2))
    assert model.margin == 0.3   # the public code's default
    hinge = torch.relu(model.pair_distance(a, p, ca, cp) - model.pair_distance(a, n, ca, cp) + 0.3)[valid].mean()
    assert stats["triplet_loss"] == pytest.approx(hinge.item(), abs=1e-5)
    assert loss.item() > hinge.item()   # plus the regularisers
    with pytest.raises(ValueError, match="loss='triplet' trains pair-distance models"):
        objective.check_model(tiny_model("fhn"))


# ----------------------------------------------------------------------------- training and stages


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_trains_and_rebuilds_from_its_checkpoint(name, tiny, tmp_path):
    """One short epoch with its own objective: the loss is finite, every parameter that the loss
    reaches moves, and the checkpoint rebuilds a model giving the same test scores."""
    cfg = training.TrainConfig(model=name, loss=MODELS[name].objective, backbone="cnn-small", dim=D, heads=2,
                               epochs=2 if name == "outfitnet" else 1, batch_size=8, max_steps_per_epoch=2,
                               device="cpu", patience=3, **MODELS[name].train_defaults)
    torch.manual_seed(0)
    model = build_model(name, backbone="cnn-small", n_users=tiny.n_users, dim=D, heads=2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    result = fit(model, tiny, cfg, tmp_path, make_objective(cfg), progress=False)
    assert all(np.isfinite(h["loss"]) for h in result["history"])
    moved = [k for k, v in model.named_parameters() if not torch.equal(before[k], v)]
    assert any(k.startswith("backbone.") for k in moved), moved
    rebuilt, payload = load_model(tmp_path / "checkpoint.pt")
    assert payload["config"]["model"]["kind"] == name
    cand = tiny.candidates["test/random"]
    scores = [m.score_cached(cand.user, cand.items, item_cache(m, tiny, cand.items)) for m in (model.eval(), rebuilt)]
    assert torch.allclose(*scores, atol=1e-5)


def test_baseline_config_takes_the_model_objective_and_defaults(run_dir):
    cfg = training.baseline_config(run_dir, "lpae-u", epochs=1)
    assert (cfg.model, cfg.loss, cfg.backbone, cfg.dim) == ("lpae-u", "lpae", "cnn-small", 128)
    assert cfg.val_split == "val_student"
    assert cfg.lr == MODELS["lpae-u"].train_defaults["lr"]
    assert training.baseline_config(run_dir, "fhn", lr=0.5, tau=0.2).lr == 0.5
    assert training.baseline_name(cfg) == "lpae-u"
    assert training.baseline_name(training.baseline_config(run_dir, "lpae-u", hard_fraction=0.5)) == "lpae-u-hard"
    other = training.baseline_config(run_dir, "fhn", loss="npair", hard_fraction=0.3)
    assert training.baseline_name(other) == "fhn-npair-hard0.3"
    with pytest.raises(ConfigError, match="model='sce-net' is not personalized"):
        training.baseline_config(run_dir, "sce-net", hard_fraction=0.5)
    with pytest.raises(ConfigError, match="model='lpae' is unknown"):
        training.baseline_config(run_dir, "lpae")


def test_stage_writes_metrics_and_marks_non_personalized(run_dir):
    run = RunFolder(run_dir)
    for name, personalized in (("lpae-g", True), ("type-aware", False)):
        m = run.read_metrics(name)
        assert m["model"] == name and m["personalized"] is personalized
        assert set(m["test"]) == {"random", "hard"}
        model, _ = run.load_model(name)
        assert model.kind == name


def test_cold_start_includes_baselines(run_dir):
    result = run_cold_start(run_dir, ["lpae-g", "type-aware"], n_interactions=(1, 5), curve_interactions=(),
                            repetitions=2, device="cpu", progress=False)
    got = {(r["model"], r["strategy"], r["n_interactions"]): r for r in result["rows"]}
    assert set(got) == {("lpae-g", rule, n) for rule in ("anchor-search", "anchor-search-max") for n in (1, 5)} | {
        ("type-aware", "non-personalized", 1), ("type-aware", "non-personalized", 5)}
    # every row of a cell (protocol, n) ranked the same held-out candidates
    for n in (1, 5):
        cell = [r for r in result["rows"] if r["n_interactions"] == n and r["protocol"] == "random"]
        assert len({r["candidate_digest"] for r in cell}) == 1 and len({r["candidate_rows"] for r in cell}) == 1
        assert len({frozenset(r["per_user_auc"]) for r in cell}) == 1
    # the non-personalized number is s(o)'s ranking of exactly those rows, repetition by repetition
    ds = RunFolder(run_dir).dataset()
    model, _ = RunFolder(run_dir).load_model("type-aware")
    setup = cold_setup(ds)
    cand = setup.candidates["random"]
    scores = model.score_cached(cand.user, cand.items, item_cache(model, ds, cand.items)).numpy()
    episodes = setup.episodes(5, 2, 0)
    aucs = []
    for rep in range(2):
        rows_idx, owner = held_out_rows(setup, [e for e in episodes.samples if e.repetition == rep], "random")
        aucs.append(ranking_metrics_all(owner, scores[rows_idx], cand.label[rows_idx])["auc"])
    flat = got["type-aware", "non-personalized", 5]
    assert flat["auc_mean"] == pytest.approx(np.mean(aucs), abs=1e-9) and flat["repetitions"] == 2
    assert got["lpae-g", "anchor-search", 1]["repetitions"] == 2
    assert table3(result).shape == (3, 2)
    with pytest.raises(StageError, match=r"\['fhn \(fhn\)'\] have no cold-start rule"):
        run_cold_start(run_dir, ["lpae-g", "fhn"], progress=False)


@pytest.mark.notebook
def test_notebook_07_trains_a_baseline_on_a_run_folder(run_dir, tmp_path):
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(NOTEBOOK_DIR / "07_baselines.ipynb"), str(out),
                        parameters={"run_dir": str(run_dir), "model": "sce-net", "epochs": 1, "device": "cpu"},
                        progress_bar=False)
    m = RunFolder(run_dir).read_metrics("sce-net")
    assert m["loss"] == "triplet" and m["backbone"] == "cnn-small"
    assert "sce-net (best epoch 1)" in out.read_text()  # a bad `model`: test_bad_input's 07_baselines cases


# ----------------------------------------------------------------------------- adding a model


def test_every_module_of_the_package_is_imported():
    import pathlib
    import sys

    import fndkit.baselines as package

    files = sorted(p.stem for p in pathlib.Path(package.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    assert package.import_all() == files
    assert all(f"fndkit.baselines.{name}" in sys.modules for name in files)


@pytest.fixture
def mean_pool():
    """The README's worked example: a new model and a new objective, each registered by name."""
    from torch import nn

    from fndkit.baselines.common import Baseline, masked_mean
    from fndkit.models.registry import register_model
    from fndkit.objectives import Objective, register_objective

    @register_model("readme-mean-pool")
    class MeanPool(Baseline):
        """The outfit vector is the mean of its item features; the score its cosine with the user."""
        objective = "readme-hinge"
        train_defaults = {"lr": 0.01}

        def __init__(self, backbone, n_users, dim=128, weights=None, slot_categories=None):
            super().__init__(backbone, n_users, dim, weights, slot_categories)
            self.users = nn.Embedding(n_users, dim)

        def score_items(self, users, features, mask):
            return F.cosine_similarity(self.users(users), masked_mean(features, mask), dim=-1)

    class Hinge(Objective):
        def __call__(self, model, batch):
            pos, neg = batch.pair_scores(model)
            loss = torch.relu(0.2 - pos[:, None] + neg).mean()
            return loss, {"loss": loss.item()}

    register_objective("readme-hinge")(lambda cfg, **_: Hinge())
    yield "readme-mean-pool"
    MODELS.pop("readme-mean-pool")
    OBJECTIVES.pop("readme-hinge")


def test_a_model_registered_in_one_place_trains_through_the_stage(mean_pool, run_dir):
    cfg = training.baseline_config(run_dir, mean_pool, epochs=1, max_steps_per_epoch=2, dim=D, device="cpu")
    assert cfg.loss == "readme-hinge"
    metrics = training.run(run_dir, training.baseline_name(cfg), cfg, progress=False)
    assert metrics["model"] == mean_pool and np.isfinite(metrics["test"]["random"]["auc"])
    assert catalogue([mean_pool]).loc[0, "objective"] == "readme-hinge"
    model, _ = RunFolder(run_dir).load_model(mean_pool)
    assert type(model).__name__ == "MeanPool"
