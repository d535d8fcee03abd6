"""The bench at tiny scale, so it cannot rot: counts in closed form, cached and per-outfit scoring
agree, the step's parts neither overlap nor miss their objective, the step's optimizer is fit()'s, and
``python -m fndkit bench`` writes its JSON."""

import contextlib
import io
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fndkit import augment, cli, objectives
from fndkit.bench import jpeg as bench_jpeg
from fndkit.bench import profile as bench
from fndkit.bench.jpeg import GpuBusy, parse_utilization
from fndkit.config import train_config
from fndkit.evaluate import score_rows
from fndkit.objectives import make_objective
from fndkit.train import build_model, make_optimizer


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One bench through the command line: (its JSON, what it printed, the JSON's path)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["bench", "--scale", "tiny", "--device", "cpu", "--users", "2", "--steps", "2",
                         "--warmup", "1", "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text()), printed.getvalue(), out


@pytest.fixture(scope="module")
def result(cli_run):
    return cli_run[0]


def test_scoring_counts_and_agreement(result, tiny):
    cand = tiny.candidates["test/random"]
    users, items = np.asarray(cand.user), np.asarray(cand.items)
    sample = bench.sample_users(users, 2, seed=0)
    assert len(sample) == 2 and len(np.unique(sample)) == 2
    rows = np.isin(users, sample)
    for s in result["scoring"]:
        assert s["rows"] == len(users) and s["users"] == len(np.unique(users))
        assert s["unique_items"] == len(np.unique(items[items >= 0]))
        assert s["item_slots"] == int((items >= 0).sum())
        p = s["per_outfit"]
        assert p["user_ids"] == sample.tolist()
        assert p["rows"] == int(rows.sum())
        assert p["images_encoded"] == int((items[rows] >= 0).sum())  # every slot again, no cache
        # the same model scores the same rows the same way with and without the item cache
        assert s["max_abs_difference"] < 1e-5
        # a sample: the all-user figure is extrapolated by rows, and says so
        assert s["per_outfit_all_measured"] is False
        assert s["per_outfit_all_seconds"] == pytest.approx(p["seconds"] * len(users) / p["rows"])
        assert s["ratio"] == pytest.approx(s["per_outfit_all_seconds"] / s["cached_seconds"])
    assert [s["role"] for s in result["scoring"]] == ["teacher", "student"]


def test_per_outfit_scoring_matches_the_cache_for_every_user(tiny):
    model = build_model(train_config("tiny", "student", device="cpu"), tiny)
    cand = tiny.candidates["test/hard"]
    cached = score_rows(model, tiny, cand.user, cand.items)
    again, encoded = bench.score_per_outfit(model, tiny, cand.user, cand.items, batch_size=37)
    assert encoded == int((np.asarray(cand.items) >= 0).sum())
    np.testing.assert_allclose(again, cached, atol=1e-5)
    # every user: the all-user figure is measured, not extrapolated
    every = bench.bench_scoring(model, tiny, "cpu", users_sample=None)
    assert every["per_outfit_all_measured"] is True
    assert every["per_outfit"]["rows"] == every["rows"]
    assert every["per_outfit_all_seconds"] == every["per_outfit"]["seconds"]


def test_step_parts(result):
    by_name = {s["name"]: s for s in result["step"]}
    assert list(by_name) == ["teacher npair", "student fnd", "student fnd+cl"]
    for s in result["step"]:
        assert set(s["fractions"]) == set(bench.STEP_PARTS)
        # the parts are disjoint: were any counted twice, they would exceed the step and "other"
        # (clipped at 0) could not make them add up to exactly one step
        assert sum(s["fractions"].values()) == pytest.approx(1.0, abs=1e-9)
        # the named parts fit inside the step, and "other" is the rest (its clip at 0 never needed)
        named = sum(v for k, v in s["parts"].items() if k != "other")
        assert named <= s["step_seconds"] * (1 + 1e-9)
        assert s["parts"]["other"] == pytest.approx(s["step_seconds"] - named, rel=1e-9, abs=1e-12)
        for part in ("sampling", "image gathering", "backbone forward", "backbone backward",
                     "set transformer forward", "set transformer backward", "optimizer"):
            assert s["parts"][part] > 0, (s["name"], part)
    teacher, fnd, cl = by_name.values()
    assert teacher["parts"]["teacher lookups (FND)"] == 0 and teacher["parts"]["augmentations (CL)"] == 0
    assert fnd["parts"]["teacher lookups (FND)"] > 0 and fnd["parts"]["augmentations (CL)"] == 0
    assert cl["parts"]["teacher lookups (FND)"] > 0 and cl["parts"]["augmentations (CL)"] > 0
    assert result["teacher_cache_seconds"] > 0  # once, shared by the FND and FND-CL profiles
    assert (teacher["backbone"], fnd["backbone"]) == ("cnn-large", "cnn-small")  # the tiny preset
    # the timing wrappers are gone afterwards
    assert objectives.make_views is augment.make_views


def test_memory_and_table(result):
    mem = result["memory"]
    assert 0 < mem["peak_rss_after_generation"] <= mem["peak_rss_after_scoring"] <= mem["peak_rss_at_end"]
    table = bench.format_tables(result)
    assert "| part | teacher npair (cnn-large) | student fnd (cnn-small) | student fnd+cl (cnn-small) |" in table
    assert "(extrapolated)" in table and "target ≤ 8 GiB" in table


def test_cli_writes_json_and_prints_the_tables(cli_run):
    saved, printed, out = cli_run
    assert saved["scale"] == "tiny" and saved["device"] == "cpu"
    assert saved["command"] == ("python -m fndkit bench --scale tiny --device cpu --users 2 --steps 2 "
                                f"--warmup 1 --out {out}")
    assert bench.format_tables(saved) in printed and f"written: {out}" in printed


def test_bad_input():
    with pytest.raises(ValueError, match="scale='huge' is unknown"):
        bench.run_bench("huge", device="cpu")
    with pytest.raises(ValueError, match="users=0 must be a positive number"):
        bench.run_bench("tiny", device="cpu", users=0)


# --------------------------------------------------------------------------------------------
# the real-layout bench (fndkit/bench/jpeg.py), at 32 px with small CNNs so that it takes seconds


@pytest.fixture(scope="module")
def jpeg_run(tmp_path_factory):
    fixture = tmp_path_factory.mktemp("jpeg") / "fixture"
    kwargs = dict(items=60, device="cpu", steps=2, warmup=1, fly_steps=1, workers=2, fixture=fixture,
                  progress=False, image_size=32, backbones={"teacher": "cnn-small", "student": "cnn-tiny"},
                  batch_size=4)
    first = bench_jpeg.run_jpeg_bench(**kwargs)
    return first, bench_jpeg.run_jpeg_bench(**kwargs), fixture


def test_jpeg_bench_builds_the_fixture_once_and_decodes_every_run(jpeg_run):
    first, second, fixture = jpeg_run
    assert (fixture / "release" / "FIXTURE.json").is_file()
    assert first["fixture"] == {**second["fixture"], "seconds_now": first["fixture"]["seconds_now"]}
    for r in (first, second):
        assert r["dataset"]["items"] == 60 and not r["full_size"]
        d = r["decode"]
        assert d["images"] == 60 and d["workers"] == 2 and d["store_bytes"] == 60 * 32 * 32 * 3
        assert d["images_per_second"] == pytest.approx(60 / d["seconds"])
        assert d["polyvore630_extrapolated"]["store_bytes"] == 199_537 * 32 * 32 * 3


def test_jpeg_bench_feeds_each_model_three_ways(jpeg_run):
    result = jpeg_run[0]
    assert [(r["role"], r["backbone"]) for r in result["steps"]] == [("teacher", "cnn-small"), ("student", "cnn-tiny")]
    for row in result["steps"]:
        sources = row["sources"]
        assert list(sources) == ["jpeg store (memory-mapped)", "in-memory array", "JPEG decoded every step"]
        assert [s["steps"] for s in sources.values()] == [2, 2, 1]
        assert not any(s["prefetch"] for s in sources.values())   # CPU: no prefetch
        store, array = sources["jpeg store (memory-mapped)"], sources["in-memory array"]
        assert row["store_over_array_mean"] == pytest.approx(store["step_seconds"] / array["step_seconds"])
        assert row["store_over_array"] == pytest.approx(np.median(np.divide(store["step_seconds_each"],
                                                                           array["step_seconds_each"])))
        assert store["step_seconds"] == pytest.approx(np.mean(store["step_seconds_each"]))
        assert 0 < store["gather_seconds_per_step"] < store["step_seconds"]
        assert store["steps_per_second"] == pytest.approx(1 / store["step_seconds"])
        # the same seeded batches whatever feeds them: the same number of images per step
        assert store["images_per_step"] == array["images_per_step"] <= 4 * 3 * 2
        epoch = row["polyvore630_epoch_seconds_extrapolated"]
        assert epoch["jpeg_store"] == pytest.approx(3525 * store["step_seconds"])
        assert row["gpu_busy"] == {"skipped": "no CUDA device"}
    table = bench_jpeg.format_jpeg_tables(result)
    assert "store / array" in table and "GPU busy: skipped (no CUDA device)" in table


def test_gpu_busy_samples_nvidia_smi(tmp_path, monkeypatch):
    """The sampling code path without a GPU: a stand-in nvidia-smi prints utilisations."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '50\\n[N/A]\\n70 %%\\n'\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with GpuBusy(enabled=True, interval_ms=10) as gpu:
        for _ in range(200):
            if len(gpu.samples) == 2:
                break
            time.sleep(0.01)
    assert gpu.result() == {"busy_fraction": pytest.approx(0.6), "samples": 2}
    assert GpuBusy(enabled=False).__enter__().result() == {"skipped": "no CUDA device"}
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with GpuBusy(enabled=True) as gpu:
        pass
    assert gpu.result() == {"skipped": "nvidia-smi not found"}
    assert parse_utilization(" 87 \n") == 87.0 and parse_utilization("utilization.gpu [%]") is None


def test_jpeg_bench_bad_input(capsys):
    assert cli.main(["bench", "--scale", "polyvore630-jpeg", "--items", "3", "--device", "cpu"]) == 2
    assert "items=3 must be an integer >= 40" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# one optimizer: the benches time the step fit() takes


def test_one_optimizer_for_fit_and_the_benches(tiny):
    cfg = train_config("tiny", "student", device="cpu").replace(lr=0.05, momentum=0.8, weight_decay=1e-4)
    model = build_model(cfg, tiny)
    extra = torch.nn.Linear(2, 2)
    objective = make_objective(cfg)
    objective.parameters = lambda: list(extra.parameters())   # an objective with parameters of its own (a hint)
    opt = make_optimizer(model, cfg, objective)
    (group,) = opt.param_groups
    assert isinstance(opt, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05 * cfg.batch_size / 32, 0.8, 1e-4)
    mine = {id(q) for q in group["params"]}
    assert mine == {id(q) for q in [*model.parameters(), *extra.parameters()]}
    # nowhere else in the library is an SGD built for a recommender's step (the attribute
    # pre-training's classifier, fndkit/pretrain.py, has its own schedule and settings)
    package = Path(bench.__file__).resolve().parent.parent
    built = sorted(str(f.relative_to(package)) for f in package.rglob("*.py")
                   if re.search(r"torch\.optim\.SGD\(", f.read_text()))
    assert built == ["pretrain.py", "train.py"]


def test_every_timer_waits_for_cuda_through_one_function(monkeypatch):
    """repro.synchronize is the one device wait: it waits on a CUDA device (or on whatever CUDA
    exists when no device is named) and not on the CPU; the bench's Clock reads through it."""
    import torch

    from fndkit import repro
    from fndkit.bench.clock import Clock

    waits = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: waits.append("wait"))
    repro.synchronize("cpu")
    assert waits == []
    repro.synchronize("cuda:1")
    Clock("cuda").now()
    assert waits == ["wait", "wait"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    repro.synchronize()
    assert len(waits) == 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    repro.synchronize()
    Clock("cpu").now()
    assert len(waits) == 3
    # every bench (profile, jpeg, the timed chain, Table 5) times with the Clock: no other device wait
    package = Path(repro.__file__).resolve().parent
    waiting = sorted(str(f.relative_to(package)) for f in package.rglob("*.py") if "synchronize(" in f.read_text())
    assert waiting == ["bench/clock.py", "repro.py"]
