"""Real data as the paper ran it (issue 14), on tiny fixtures: 00_data reads either source format,
the training stages start from the weights they are given (ImageNet when its file is there, a clear
line when not) and record them, and cold start follows the released Polyvore-53/-32 split.

The released-split cold start is checked against a naive per-user loop written from eqs. 20–24.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import papermill as pm
import pytest
import torch
from sklearn.metrics import roc_auc_score
from test_polyvore import MAIN_USERS, Release, write_subset
from torchvision.models import AlexNet_Weights, alexnet

from fndkit import stages
from fndkit.artifacts import load_checkpoint
from fndkit.coldstart import released_split_protocol
from fndkit.config import SCALE_PRESETS, ConfigError, DataConfig, TrainConfig, train_config
from fndkit.data.folder import write_outfit_folder
from fndkit.data.sampling import attach_candidates
from fndkit.data.schema import DatasetError
from fndkit.data.synthetic import make_dataset
from fndkit.models.backbones import build_backbone, file_sha256
from fndkit.models.contract import make_image_fn
from fndkit.plans.execute import NOTEBOOK_DIR
from fndkit.rundir import RunFolder, StageStatus
from fndkit.stages.cold_start import cold_setup, table3
from fndkit.train import build_model


def quiet(fn, *args, **kwargs):
    """Call ``fn`` with the random fixtures' "released split breaks an invariant" warning muted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# A cold pool with enough test candidates that a per-user AUC tells one ranking from another:
# users 0 and 1 have 4 and 3 released training outfits, user 2 only 1; each has 2 test outfits.
COLD = {"train": [0, 1, 2, 0, 1, 0, 1, 0], "val": [0, 1, 2], "test": [0, 1, 2, 2, 1, 0]}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    """Polyvore-630 + its cold pool 53 (released nega and nega_hard: 6 and 5 per cold positive)."""
    release = Release(tmp_path_factory.mktemp("polyvore") / "polyvore")
    write_subset(release, "630", variable=False, n_items=(5, 4, 3), users=MAIN_USERS, seed=1)
    write_subset(release, "53", variable=False, n_items=(6, 5, 4), users=COLD, ratio=6, hard_ratio=5,
                 csv_ext=".csv", seed=2)
    return release


def tiny_with_negatives():
    """The tiny synthetic benchmark with candidates drawn at seed 3 (00_data would draw at its
    seed, 0: a list kept from negatives.csv is told apart from a redrawn one)."""
    return attach_candidates(make_dataset(scale="tiny", seed=0, image_size=16), seed=3)


@pytest.fixture(scope="module")
def outfit_folder(tmp_path_factory):
    """The tiny synthetic benchmark written as an outfit folder (bring-your-own-data format)."""
    root = tmp_path_factory.mktemp("byod") / "my_outfits"
    return write_outfit_folder(tiny_with_negatives(), root)


# --------------------------------------------------------------------------------------------
# 00_data: the source format


def test_data_config_format_is_checked():
    assert DataConfig().format == "auto"
    with pytest.raises(ConfigError, match=r"format='csv' is unknown; choose one of \('auto', 'polyvore', 'folder'\)"):
        DataConfig(source="/data", format="csv")
    with pytest.raises(ConfigError, match="format='folder' reads a folder, but source='synthetic'"):
        DataConfig(format="folder")


def test_auto_tells_the_two_formats_apart(release, outfit_folder):
    assert stages.data.source_format(DataConfig(source=str(release.root))) == "polyvore"
    assert stages.data.source_format(DataConfig(source=str(outfit_folder))) == "folder"
    assert stages.data.source_format(DataConfig(source=str(outfit_folder), format="polyvore")) == "polyvore"


def test_a_folder_that_is_neither_names_both_formats(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match=r"is neither a Polyvore-U root nor an outfit folder.*"
                                           r"tuples_<U>/.*items\.csv \+ outfits\.csv"):
        stages.build_dataset(DataConfig(source=str(tmp_path / "stuff")))
    with pytest.raises(DatasetError, match=r"neither 'synthetic' nor an existing folder.*Polyvore-U root"
                                           r".*outfit folder \(holding items\.csv and outfits\.csv"):
        stages.build_dataset(DataConfig(source=str(tmp_path / "nowhere")))


def test_forced_format_gives_that_readers_error(release, outfit_folder):
    with pytest.raises(DatasetError, match=r"missing file .*items\.csv"):
        stages.build_dataset(DataConfig(source=str(release.root), format="folder", image_size=16))
    with pytest.raises(DatasetError, match=r"no image layout found under .*images/291x291"):
        stages.build_dataset(DataConfig(source=str(outfit_folder), format="polyvore", image_size=16))


def test_00_data_notebook_reads_an_outfit_folder(outfit_folder, tmp_path):
    """`papermill 00_data.ipynb out.ipynb -p source <path> -p format folder`."""
    run_dir = tmp_path / "run"
    pm.execute_notebook(str(NOTEBOOK_DIR / "00_data.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters={"run_dir": str(run_dir), "source": str(outfit_folder),
                                    "format": "folder", "image_size": 16},
                        progress_bar=False, cwd=str(NOTEBOOK_DIR))
    ds = RunFolder(run_dir).dataset()
    written = tiny_with_negatives()
    assert ds.meta["source"] == "folder" and ds.name == "my_outfits"
    np.testing.assert_array_equal(ds.outfit_items, written.outfit_items)
    np.testing.assert_array_equal(ds.outfit_split, written.outfit_split)
    np.testing.assert_array_equal(ds.images.get(np.arange(5)), written.images.get(np.arange(5)))
    # negatives.csv is kept as written, not redrawn
    for key in ("test/random", "test/hard", "val_student/random"):
        np.testing.assert_array_equal(ds.candidates[key].items, written.candidates[key].items)
    assert RunFolder(run_dir).preset_name() == "real"


def test_a_dataset_built_before_format_existed_is_reused(outfit_folder, tmp_path):
    cfg = DataConfig(source=str(outfit_folder), image_size=16)
    stages.prepare_data(tmp_path / "run", cfg)
    described = tmp_path / "run" / "data" / "dataset.json"
    old = json.loads(described.read_text())
    del old["meta"]["data_config"]["format"]            # as 00_data wrote it before this issue
    described.write_text(json.dumps(old))
    stages.prepare_data(tmp_path / "run", cfg)          # reused, not refused
    with pytest.raises(stages.StageError, match="already holds dataset"):
        stages.prepare_data(tmp_path / "run", cfg.replace(format="folder", seed=1))


# --------------------------------------------------------------------------------------------
# Initial weights


def save_alexnet_features(path, seed: int = 123) -> dict:
    """A torchvision-format AlexNet state dict holding only the conv layers (what matters for the
    test and 10 MB instead of 233 MB), standing in for the ImageNet file."""
    torch.manual_seed(seed)
    features = {k: v for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(features, path)
    return features


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints" / AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]


def test_presets_pick_imagenet_only_for_the_alexnets_on_real_data():
    assert SCALE_PRESETS["real"]["weights"] == "imagenet"
    assert train_config("real", "teacher").weights == "imagenet"
    assert train_config("real", "student", weights="auto").weights == "imagenet"
    assert train_config("real", "student", backbone="cnn-small").weights is None   # no ImageNet CNN
    assert train_config("real", "student", weights=None).weights is None        # None = from scratch
    assert train_config("real", "student", weights="none").weights is None
    assert train_config("tiny", "teacher").weights is None
    assert train_config("demo", "student", weights="/w/alexnet.pth").weights == "/w/alexnet.pth"
    for bad in ("", "auto"):
        with pytest.raises(ConfigError, match=f"weights={bad!r} must be None"):
            TrainConfig(weights=bad)


def test_missing_imagenet_file_trains_from_scratch_with_one_line(torch_home, capsys):
    ds = make_dataset(scale="tiny", seed=0, image_size=16)
    torch.manual_seed(0)
    model = build_model(TrainConfig(backbone="alexnet-xs", weights="imagenet", dim=16, heads=2), ds)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert "from scratch" in lines[0] and str(torch_home) in lines[0] and "never downloads" in lines[0]
    assert model.initial_weights == {"requested": "imagenet", "weights": None, "file": None,
                                     "sha256": None, "tensors": 0}


def test_imagenet_file_in_the_torch_cache_is_used_and_recorded(torch_home, capsys):
    saved = save_alexnet_features(torch_home)
    ds = make_dataset(scale="tiny", seed=0, image_size=16)
    model = build_model(TrainConfig(backbone="alexnet-xs", weights="imagenet", dim=16, heads=2), ds)
    assert capsys.readouterr().out == f"alexnet-xs starts from {torch_home} ({len(saved)} tensors copied)\n"
    for key, tensor in saved.items():
        assert torch.equal(model.backbone.state_dict()[key], tensor), key
    assert model.initial_weights == {"requested": "imagenet", "weights": "imagenet", "file": str(torch_home),
                                     "sha256": file_sha256(torch_home), "tensors": len(saved)}


def test_weights_from_a_path_and_bad_weights(tmp_path):
    saved = save_alexnet_features(tmp_path / "mine" / "alexnet.pth", seed=5)
    ds = make_dataset(scale="tiny", seed=0, image_size=16)
    model = build_model(TrainConfig(backbone="alexnet-xs", weights=str(tmp_path / "mine" / "alexnet.pth"),
                                    dim=16, heads=2), ds)
    assert torch.equal(model.backbone.state_dict()["features.3.weight"], saved["features.3.weight"])
    assert model.initial_weights["file"] == str(tmp_path / "mine" / "alexnet.pth")
    with pytest.raises(FileNotFoundError, match=r"weights='/nowhere/alexnet\.pth': no such file"):
        build_model(TrainConfig(backbone="alexnet-xs", weights="/nowhere/alexnet.pth"), ds)
    with pytest.raises(ValueError, match=r"unknown weights 'imagnet'; choose None.*'imagenet' or the path"):
        build_model(TrainConfig(backbone="alexnet-xs", weights="imagnet"), ds)
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="holds no tensor matching the backbone"):
        build_backbone("cnn-small", weights=str(tmp_path / "other.pt"))


def test_a_fndkit_checkpoint_seeds_a_backbone(tmp_path):
    """A state dict of a whole model (e.g. a checkpoint's) gives its backbone's tensors."""
    ds = make_dataset(scale="tiny", seed=0, image_size=16)
    source = build_model(TrainConfig(backbone="cnn-small", dim=16, heads=2), ds)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "model.pt")
    target = build_backbone("cnn-small", dim=16, weights=str(tmp_path / "model.pt"))
    for key, tensor in source.backbone.state_dict().items():
        assert torch.equal(target.state_dict()[key], tensor), key


def test_training_stage_records_its_initial_weights(tmp_path):
    run = tmp_path / "run"
    stages.prepare_data(run, DataConfig(scale="tiny", seed=0, image_size=16))
    ds = RunFolder(run).dataset()
    start = build_model(TrainConfig(backbone="cnn-small", dim=16, heads=2), ds)
    torch.save(start.backbone.state_dict(), tmp_path / "start.pth")
    cfg = stages.teacher_config(run, backbone="cnn-small", epochs=1, max_steps_per_epoch=1, dim=16, heads=2,
                                device="cpu", weights=str(tmp_path / "start.pth"))
    metrics = stages.train_stage(run, "teacher", cfg, progress=False)
    record = {"requested": str(tmp_path / "start.pth"), "weights": str(tmp_path / "start.pth"),
              "file": str(tmp_path / "start.pth"), "sha256": file_sha256(tmp_path / "start.pth"),
              "tensors": len(start.backbone.state_dict())}
    assert metrics["initial_weights"] == record
    for name in ("checkpoint.pt", "last.pt"):
        assert load_checkpoint(run / "teacher" / name)["config"]["initial_weights"] == record


def test_a_stage_finished_before_weights_existed_is_still_reused(tmp_path):
    run = RunFolder(tmp_path / "run")
    cfg = TrainConfig()
    config = {"stage": "teacher", "train": cfg.to_dict()}
    folder = run.stage_dir("teacher")
    folder.mkdir(parents=True)
    old = {**config, "train": {k: v for k, v in cfg.to_dict().items() if k != "weights"}}
    (folder / "config.json").write_text(json.dumps(old))
    (folder / "metrics.json").write_text("{}")
    assert run.status("teacher", config) is StageStatus.FINISHED_SAME
    assert run.status("teacher", {**config, "train": cfg.replace(weights="imagenet").to_dict()}) \
        is StageStatus.FINISHED_OTHER


# --------------------------------------------------------------------------------------------
# Cold start on the released split


def test_released_protocol_reveals_training_outfits_and_holds_out_the_test():
    revealable = {"a": np.array([10, 11, 12]), "b": np.array([20]), "c": np.array([30, 31])}
    test = {"a": np.array([0, 1]), "b": np.array([2]), "c": np.array([], dtype=np.int64)}
    with pytest.warns(UserWarning, match="skipped 2 of 3 cold users"):
        episodes = released_split_protocol(["a", "b", "c"], revealable, test, 2, repetitions=3, seed=4)
    assert episodes.skipped_users == ("b", "c")   # b: one training outfit; c: no test outfit
    assert [e.user for e in episodes.samples] == ["a", "a", "a"]
    for e in episodes.samples:
        assert len(e.interacted_ids) == 2 and set(e.interacted_ids) <= {10, 11, 12}
        np.testing.assert_array_equal(e.held_out_ids, [0, 1])
    again = released_split_protocol(["a", "b"], revealable, test, 1, repetitions=5, seed=4)
    assert again.samples == released_split_protocol(["a", "b"], revealable, test, 1, repetitions=5, seed=4).samples
    drawn = [int(e.interacted_ids[0]) for e in again.samples if e.user == "a"]
    assert set(drawn) <= {10, 11, 12} and len(set(drawn)) > 1
    with pytest.raises(ValueError, match="n_interactions=0 must be an integer >= 1"):
        released_split_protocol(["a"], revealable, test, 0)


@pytest.fixture(scope="module")
def released_run(release, tmp_path_factory):
    """A run folder on the fixture release (630 + 53) with a tiny CNN teacher."""
    run = tmp_path_factory.mktemp("released_run")
    quiet(stages.prepare_data, run, DataConfig(source=str(release.root), subset="630", image_size=16))
    cfg = stages.teacher_config(run, backbone="cnn-small", epochs=1, batch_size=4, max_steps_per_epoch=1,
                                dim=16, heads=2, device="cpu")
    assert cfg.weights is None   # the real preset's ImageNet applies to the AlexNets only
    stages.train_stage(run, "teacher", cfg, progress=False)
    return run


def test_cold_setup_uses_the_released_files(released_run):
    ds = RunFolder(released_run).dataset()
    setup = cold_setup(ds)
    assert setup.cold_split == "released"
    train, test = (np.arange(*ds.meta["cold_outfit_ranges"][s]) for s in ("train", "test"))
    np.testing.assert_array_equal(setup.revealable, ds.outfit_items[train])
    assert setup.candidates["random"] is ds.candidates["cold/random"]
    assert setup.candidates["hard"] is ds.candidates["cold/hard"]
    assert setup.blocks == {"random": 7, "hard": 6}          # 6 and 5 negatives per positive
    assert len(test) == len(COLD["test"])
    pooled = cold_setup(ds, "pooled", ratio=4)
    assert pooled.cold_split == "pooled" and list(pooled.candidates) == ["random"]
    assert len(pooled.revealable) == len(ds.outfits_of("cold")) and pooled.blocks["random"] == 5
    with pytest.raises(ValueError, match="cold_split='lpae' is unknown"):
        cold_setup(ds, "lpae")


def naive_cold_auc(model, ds, episodes, protocol, strategy, delta=0.0, tau=0.2):
    """Eqs. 20–24 one cold user at a time, the released candidates scored outfit by outfit.
    Returns the mean over repetitions of the mean per-user AUC (sklearn), and each user's AUC
    averaged over repetitions."""
    image_fn = make_image_fn(ds.images, model.input_size, "cpu")
    start = ds.meta["cold_outfit_ranges"]["train"][0]
    test_start = ds.meta["cold_outfit_ranges"]["test"][0]
    cand = ds.candidates[f"cold/{protocol}"]
    block = len(cand) // len(COLD["test"])
    with torch.no_grad():
        users = torch.nn.functional.normalize(model.user_vectors(torch.as_tensor(ds.trained_users)), dim=-1)

        memo = {}

        def vec(items):
            key = tuple(int(i) for i in items)
            if key not in memo:
                memo[key] = torch.nn.functional.normalize(
                    model.outfit_vectors(torch.as_tensor(items)[None], image_fn), dim=-1)[0]
            return memo[key]

        per_rep = {}
        for e in episodes.samples:
            revealed = torch.stack([vec(ds.outfit_items[start + i]) for i in e.interacted_ids])
            s = (revealed @ users.T).mean(0)                                       # eq. 20
            members = (s > delta) | (s == s.max())                                  # eq. 21
            if strategy == "avg":
                w = members.double() / members.sum()                                 # eq. 22
            else:
                w = torch.softmax((s / tau).masked_fill(~members, -np.inf), 0)       # eq. 23
            labels, scores = [], []
            for b in e.held_out_ids:
                assert ds.outfit_user[test_start + b] == cand.user[b * block]
                for r in range(b * block, (b + 1) * block):
                    outfit = vec(cand.items[r])
                    scores.append(float(sum(w[i] * (users[i] @ outfit) for i in range(len(users)))))
                    labels.append(int(cand.label[r]))                                # eq. 24
            per_rep.setdefault(e.repetition, []).append((int(e.user), roc_auc_score(labels, scores)))
    per_user = {}
    for rep in per_rep.values():
        for user, auc in rep:
            per_user.setdefault(user, []).append(auc)
    return (float(np.mean([np.mean([auc for _, auc in v]) for v in per_rep.values()])),
            {u: float(np.mean(v)) for u, v in per_user.items()})


@pytest.mark.parametrize("n", [pytest.param(1, marks=pytest.mark.slow), 2])  # 2 also skips a user
def test_cold_start_on_the_released_split_matches_a_naive_loop(released_run, n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # n = 2 skips user 2 (one released training outfit)
        result = stages.run_cold_start(released_run, ["teacher"], n_interactions=(n,), curve_interactions=(),
                                       repetitions=3, seed=2, device="cpu", progress=False)
    assert result["cold_split"] == "released" and "released training outfits" in result["cold_split_description"]
    assert result["protocols"] == ["random", "hard"] and result["negative_ratios"] == {"random": 6, "hard": 5}
    rows = {(r["protocol"], r["strategy"]): r for r in result["rows"]}
    run = RunFolder(released_run)
    ds = run.dataset()
    model, _ = run.load_model("teacher")
    # the episodes, worked out from the outfit ranges the reader recorded (not from cold_setup)
    train, test = (np.arange(*ds.meta["cold_outfit_ranges"][s]) for s in ("train", "test"))
    cold = sorted(set(ds.outfit_user[test].tolist()))
    revealable = {u: np.flatnonzero(ds.outfit_user[train] == u) for u in cold}
    held_out = {u: np.flatnonzero(ds.outfit_user[test] == u) for u in cold}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        episodes = released_split_protocol(cold, revealable, held_out, n, 3, 2)
    assert {e.user for e in episodes.samples} == ({3, 4, 5} if n == 1 else {3, 4})
    for protocol in ("random", "hard"):
        for strategy in ("avg", "w-avg"):
            mean, per_user = naive_cold_auc(model, ds, episodes, protocol, strategy)
            assert rows[protocol, strategy]["auc_mean"] == pytest.approx(mean, abs=1e-6), (protocol, strategy)
            assert rows[protocol, strategy]["per_user_auc"] == pytest.approx(per_user, abs=1e-6)
    assert list(table3(result, (n,), "hard").index) == [("teacher", s) for s in ("avg", "nearest", "population", "w-avg")]


def test_cold_split_can_be_forced_and_is_reported(released_run, tmp_path):
    with pytest.warns(UserWarning, match="skipped 1 of 3 cold users with fewer than 2 released training"):
        released = stages.run_cold_start(released_run, "teacher", n_interactions=(2,), curve_interactions=(),
                                         repetitions=2, device="cpu", progress=False)
    assert released["skipped"] == {2: 1} and {r["cold_users"] for r in released["rows"]} == {2}
    with pytest.warns(UserWarning, match="skipped 3 of 3"):   # nobody has 5: no rows, no NaN
        none = stages.run_cold_start(released_run, "teacher", n_interactions=(5,), curve_interactions=(),
                                     repetitions=2, device="cpu", progress=False)
    assert none["rows"] == [] and none["skipped"] == {5: 3}
    pooled = stages.run_cold_start(released_run, "teacher", n_interactions=(1,), curve_interactions=(),
                                   repetitions=2, device="cpu", progress=False, cold_split="pooled")
    assert pooled["cold_split"] == "pooled" and pooled["protocols"] == ["random"]
    assert {r["protocol"] for r in pooled["rows"]} == {"random"}
    synthetic = tmp_path / "synthetic"
    stages.prepare_data(synthetic, DataConfig(scale="tiny", seed=0, image_size=16))
    with pytest.raises(stages.StageError, match="cold_split='released' needs a released cold-start split"):
        stages.run_cold_start(synthetic, [], cold_split="released", progress=False)
