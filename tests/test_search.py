"""The validation search on Optuna and the study storage as the plan's queue (tiny data, a few
steps an epoch): the chosen point is the validation argmax and the test candidates are never scored
during the search; every point of a grid runs exactly once with two worker processes on a journal
file; a deliberately bad learning rate is pruned; a SIGKILLed worker's trial is failed, enqueued
again and resumed from its last.pt; TensorBoard's event files hold the expected tags; bad input is
refused in one line before any training."""

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from fndkit import experiments as X
from fndkit import search as S
from fndkit.stages import training

# one student budget for every test: a trial folder's name carries its searched values only, so two
# tests asking for one point must ask with one config (long enough for the pruner's warm-up)
EPOCHS = S.PRUNER_WARMUP + 2
SMOKE = {"student": {"max_steps_per_epoch": 2, "epochs": EPOCHS}, "teacher": {"max_steps_per_epoch": 2},
         "autoencoder": {"epochs": 1}, "baseline": {}}


def make_plan(root, spaces, prefix, storage=None, prune=True):
    sweep = X.Sweep(root, seeds=(0,), quick=True, device="cpu", machine="test-machine", via="process")
    return S.SearchPlan(sweep, spaces, [], storage=storage, prefix=prefix, prune=prune, overrides=SMOKE)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A run folder with its prerequisites (data, autoencoder, teacher), run through the queue."""
    root = tmp_path_factory.mktemp("search")
    plan = make_plan(root, {}, "prep")
    storage = S.open_storage(None, plan.sweep.folder)
    S.run_jobs(storage, plan, X.prerequisites(plan.sweep, 0), S.Worker())
    return root


def trials_of(plan, method):
    storage = S.open_storage(plan.storage, plan.sweep.folder)
    return optuna.load_study(study_name=plan.study_name(f"search-{method}"), storage=storage).get_trials()


def test_chosen_point_is_the_validation_argmax_and_test_is_never_read(root, monkeypatch):
    plan = make_plan(root, {"fnd": {"alpha": [1.0, 2.5]}}, "argmax", prune=False)
    splits = []
    real = training.evaluate

    def spy(model, ds, split="test", **kw):
        splits.append(split)
        return real(model, ds, split=split, **kw)

    monkeypatch.setattr(training, "evaluate", spy)
    monkeypatch.setattr("fndkit.train.evaluate", spy)
    storage = S.open_storage(None, plan.sweep.folder)
    S.search_phase(storage, plan, S.Worker())
    assert "test" not in splits and set(splits) == {"val_student"}  # every epoch validated, nothing else
    folder = plan.sweep.seed_dir(0)
    val = {a: json.loads((folder / S.trial_stage("fnd", {"alpha": a}) / "metrics.json").read_text())
           for a in (1.0, 2.5)}
    assert all(m["test"] == {} and m["test_evaluated"] is False for m in val.values())
    assert not (folder / S.trial_stage("fnd", {"alpha": 1.0}) / "per_user_auc.json").exists()
    best = max(val, key=lambda a: (val[a]["best_val_auc"], -a))
    assert plan.sweep.chosen["fnd"] == {"alpha": best}
    assert plan.sweep.searched["fnd"]["val_auc"] == pytest.approx(val[best]["best_val_auc"])
    record = json.loads((plan.sweep.folder / "chosen.json").read_text())
    assert record["fnd"]["values"] == {"alpha": best} and record["fnd"]["trials"] == 2
    # results.csv and the report name it
    rows = X.collect([], plan.sweep)
    assert rows[["experiment", "method", "parameters", "metric"]].values.tolist() == \
        [["search", "fnd", json.dumps({"alpha": best}), "val_auc"]]
    assert f"alpha={best}" in X.chosen_table(plan.sweep).chosen.iloc[0]
    # the chosen point is what Table 2's FND row (and Fig. 4's matching α) trains with
    job = X.method_run("fnd", plan.sweep, 0)
    assert job.params.alpha == best and job.label == "student_fnd"
    # ... and at the search seed that row adopts the chosen trial: no epoch is trained again, the
    # test set is scored only now, after the choice
    assert (folder / "student_fnd" / "last.pt").exists() and not (folder / "student_fnd" / "metrics.json").exists()
    splits.clear()
    resumed = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: resumed.append(k.get("resume")) or real_fit(*a, **k))
    S.run_jobs(storage, plan, [job], S.Worker())
    final = json.loads((folder / "student_fnd" / "metrics.json").read_text())
    trial_history = json.loads((folder / S.trial_stage("fnd", {"alpha": best}) / "history.json").read_text())
    assert resumed == [True] and splits == ["test"]
    assert json.loads((folder / "student_fnd" / "history.json").read_text()) == trial_history
    assert final["best_val_auc"] == pytest.approx(val[best]["best_val_auc"]) and final["test"]["random"]["auc"] > 0
    fig4 = {shown["alpha"]: j.label for _, shown, j in X.EXPERIMENTS["fig4"](replace(plan.sweep, quick=False), 0)
            if shown}
    assert fig4[best] == "student_fnd" and all(v.startswith("student_fnd-alpha") for a, v in fig4.items() if a != best)


def test_tensorboard_events_hold_the_scalars_and_hparams(root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stage = make_plan(root, {}, "tb").sweep.seed_dir(0) / S.trial_stage("fnd", {"alpha": 1.0})
    if not stage.exists():
        pytest.skip("needs the argmax test's trials")
    acc = EventAccumulator(str(stage))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/auc", "val/ndcg_lpae", "lr", "train/flagged_fraction", "train/flag_precision",
            "train/flag_recall"} <= tags
    history = json.loads((stage / "history.json").read_text())
    assert [e.value for e in acc.Scalars("val/auc")] == pytest.approx([h["val_auc"] for h in history])
    assert [e.step for e in acc.Scalars("val/auc")] == [h["epoch"] for h in history]
    hp = EventAccumulator(str(stage), size_guidance={"tensors": 0})
    hp.Reload()
    assert any("hparams" in p for p in hp.PluginTagToContent("hparams")) or hp.Tags()["tensors"]


def test_bad_learning_rate_is_pruned(root):
    plan = make_plan(root, {"npair": {"lr": [0.03, 0.01, 1e-9]}}, "prune")
    S.search_phase(S.open_storage(None, plan.sweep.folder), plan, S.Worker())
    by_lr = {t.params["lr"]: t for t in trials_of(plan, "npair")}
    # pruned at the first epoch after the warm-up, and trained no further
    assert by_lr[1e-9].state == TrialState.PRUNED and by_lr[1e-9].user_attrs["last_epoch"] == S.PRUNER_WARMUP + 1
    history = json.loads((Path(by_lr[1e-9].user_attrs["stage_dir"]) / "history.json").read_text())
    assert len(history) == S.PRUNER_WARMUP + 1
    assert by_lr[0.03].state == by_lr[0.01].state == TrialState.COMPLETE
    assert plan.sweep.searched["npair"]["pruned"] == 1 and plan.sweep.chosen["npair"]["lr"] != 1e-9


def test_every_point_runs_exactly_once_with_two_workers(root):
    plan = make_plan(root, {"bpr": {"tau": [0.05, 0.2, 0.5]}}, "two", prune=False)
    S.launch(plan, workers=2, report=False)
    trials = trials_of(plan, "bpr")
    assert sorted(t.params["tau"] for t in trials) == [0.05, 0.2, 0.5]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) in (1, 2)
    for t in trials:  # each trained its epochs once (a second training would restart the history)
        history = json.loads((Path(t.user_attrs["stage_dir"]) / "history.json").read_text())
        assert [h["epoch"] for h in history] == list(range(1, len(history) + 1)) and len(history) >= 2


def _run_worker(plan):
    import torch

    torch.set_num_threads(1)
    S.work(plan, report=False)


def test_killed_worker_trial_is_failed_requeued_and_resumed(root, monkeypatch):
    plan = make_plan(root, {"fnd": {"alpha": [1.5]}}, "kill", prune=False)
    plan.overrides = {**SMOKE, "student": {"max_steps_per_epoch": 2, "epochs": 3}}
    stage = plan.sweep.seed_dir(0) / S.trial_stage("fnd", {"alpha": 1.5})
    child = S.worker_context().Process(target=_run_worker, args=(plan,))
    child.start()
    deadline = time.time() + 120
    while time.time() < deadline:  # killed as soon as its first epoch is committed
        if (stage / "last.pt").exists() and (stage / "history.json").exists():
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    first = trials_of(plan, "fnd")
    assert [t.state for t in first] == [TrialState.RUNNING]
    resumed = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: resumed.append(k.get("resume")) or real_fit(*a, **k))
    S.search_phase(S.open_storage(None, plan.sweep.folder), plan, S.Worker())
    trials = trials_of(plan, "fnd")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "no longer running" in trials[0].user_attrs["stale"]
    assert trials[1].user_attrs["resumed_from_trial"] == trials[0].number
    assert resumed == [True]  # from last.pt, not from scratch
    assert [h["epoch"] for h in json.loads((stage / "history.json").read_text())] == [1, 2, 3]


def test_bad_input_is_one_line_before_training(root, tmp_path, capsys):
    base = ["--quick", "--root", str(tmp_path / "bad"), "--device", "cpu"]
    cases = [(["nope", *base], "method 'nope' is unknown"),
             (["fnd", *base, "--values", "fnd.alpha=7"], "fnd: alpha=7.0 is outside the declared space"),
             (["fnd", *base, "--values", "fnd.beta=1"], "'beta' is not in its search space"),
             (["fnd", *base, "--storage", "redis://x"], "is not a storage"),
             (["fnd", *base, "--storage", "postgresql://u:secret@127.0.0.1:9/db"], "is unreachable")]
    for argv, needle in cases:
        assert S.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1 and "secret" not in err, err
    for argv, needle in ((["fig99", *base], "unknown experiment(s) ['fig99']"),
                         (["table2", *base, "--values", "zzz.lr=1"], "'zzz', which is not searched here")):
        assert S.paper_main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").rglob("search-*"))
    # a study another plan created: its folder differs
    plan = make_plan(root, {"fnd": {"alpha": [1.0]}}, "owned")
    storage = S.open_storage(str(tmp_path / "shared.journal"), plan.sweep.folder)
    S.open_study(storage, plan.study_name("search-fnd"), {"folder": "/elsewhere", "scale": "tiny"})
    with pytest.raises(S.SearchError, match="created by another plan.*--study-prefix"):
        replace(plan, storage=str(tmp_path / "shared.journal")).check()


def _postgres_bin() -> Path | None:
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    return Path(found[-1]).parent if found[-1] else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on a loopback port (trust auth), removed afterwards; run as
    the ``postgres`` user when this is root (the server refuses to run as root)."""
    import shutil
    import socket
    import subprocess
    import tempfile

    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb is absent: `make postgres` installs Debian's postgresql package")
    data = Path(tempfile.mkdtemp(prefix="fndkit-pg-"))  # under /tmp: the postgres user can reach it
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data / "db"), "--auth=trust", "-U", "postgres")
        run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "log"), "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_a_postgresql_storage(root, postgres_url):
    """Two worker processes (two machines' stand-ins) on one PostgreSQL server: each grid point once."""
    plan = make_plan(root, {"npair": {"lr": [0.003, 0.03]}}, "pg", storage=postgres_url, prune=False)
    S.launch(plan, workers=2, report=False)
    trials = trials_of(plan, "npair")
    assert sorted(t.params["lr"] for t in trials) == [0.003, 0.03]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    storage = S.open_storage(postgres_url, plan.sweep.folder)
    # enqueued once although both workers enqueue (PostgreSQL advisory lock), trained once
    assert len(optuna.load_study(study_name="pg:jobs-r2", storage=storage).get_trials()) == 1  # the teacher
    assert len(trials) == 2
    study = optuna.load_study(study_name="pg:jobs-r2", storage=storage)
    from sqlalchemy import create_engine, text

    probe = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :key"
    with S.enqueue_lock(study._storage), probe.connect() as conn:
        assert conn.execute(text(held), {"key": S.ENQUEUE_LOCK_KEY}).scalar() == 1
    with probe.connect() as conn:
        assert conn.execute(text(held), {"key": S.ENQUEUE_LOCK_KEY}).scalar() == 0
    probe.dispose()
    # the same plan's other study names stay owned by it: another folder is refused
    other = replace(plan, sweep=replace(plan.sweep, root=plan.sweep.root / "other"))
    with pytest.raises(S.SearchError, match="created by another plan"):
        other.check()


def test_gpu_benchmark_script_samples_the_gpu_and_times_the_run(tmp_path):
    """scripts/gpu_paper.sh around a short command, with a stand-in nvidia-smi that reports 0 %
    then 60 % (its real use: `OUT=… K=4 scripts/gpu_paper.sh` on a GPU machine)."""
    import subprocess
    import sys

    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nif [ -f {tmp_path}/busy ]; then echo 60; else touch {tmp_path}/busy; echo 0; fi\n")
    fake.chmod(0o755)
    script = Path(__file__).resolve().parent.parent / "scripts" / "gpu_paper.sh"
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
           "SAMPLE_S": "0.1", "K": "3", "PY": sys.executable, "ROOT": str(tmp_path / "root"),
           "CMD": f"{sys.executable} -c 'import time; time.sleep(1.5)'"}
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, timeout=60)
    record = json.loads((tmp_path / "out" / "bench.json").read_text())
    samples = [float(x) for x in (tmp_path / "out" / "gpu_samples.txt").read_text().split()]
    assert samples[0] == 0 and samples[1:] and set(samples[1:]) == {60.0}
    assert record["gpu_samples"] == len(samples) and record["workers_per_gpu"] == 3 and record["exit_code"] == 0
    assert record["gpu_busy_fraction"] == pytest.approx(round((len(samples) - 1) / len(samples), 3))
    assert record["gpu_mean_utilization"] == pytest.approx(round(60 * (len(samples) - 1) / len(samples), 1))
    assert 1.4 < record["wall_seconds"] < 30


def test_a_failed_job_stops_every_worker_naming_it(root):
    plan = make_plan(root, {}, "fail")
    storage = S.open_storage(None, plan.sweep.folder)
    bad = X.stage_job(plan.sweep, 0, "student", "student_bad", loss="npair", lr=-1.0)
    with pytest.raises(S.JobError, match=r"student_bad failed.*lr=-1"):
        S.run_jobs(storage, plan, [bad], S.Worker())
    study = optuna.load_study(study_name="fail:jobs-r3", storage=storage)
    with pytest.raises(S.JobError, match=r"fail:jobs-r3: student_bad failed .*rerun the same command"):
        S.check_phase(study)  # what another worker finds when the phase ends


def test_claims_are_judged_at_a_benjamini_hochberg_false_discovery_rate():
    """Three claims with p = 0.03, 0.04, 0.9: each of the first two is below 0.05 alone, but their
    BH-adjusted q (min over j >= i of p_(j) m / j) is 0.06, so neither is 'supported'."""
    import pandas as pd

    def row(method, mean, experiment="table2"):
        return {"experiment": experiment, "method": method, "parameters": "{}", "protocol": "random",
                "metric": "auc", "mean": mean, "std": 0.0, "count": 1}

    sweep = X.Sweep("/tmp/unused", quick=True, machine="m")
    b1, b2 = X.baselines(sweep)[:2]
    table = pd.DataFrame([row("fnd", 0.90), row("npair", 0.88), row("fnd-cl", 0.92), row(b1, 0.80), row(b2, 0.70)])
    tests = pd.DataFrame([{"a": "student_fnd", "b": "student_npair", "protocol": "random", "wilcoxon_p": 0.03},
                          {"a": "contrastive", "b": "student_fnd", "protocol": "random", "wilcoxon_p": 0.04},
                          {"a": "contrastive", "b": b1, "protocol": "random", "wilcoxon_p": 0.9}])
    out = {c["claim"]: c for c in X.claims(table, tests, sweep)}
    fnd = out["FND beats the N-pair student (Table 2, random negatives)"]
    assert fnd["verdict"] == "direction only (not significant) (BH q = 0.06 over 3 tests)"
    assert "p = 0.03, BH q = 0.06" in fnd["numbers"]
    assert out["FND-CL beats FND (Table 2)"]["verdict"].startswith("direction only")
    assert out[f"FND-CL beats {b2} (Table 2)"]["verdict"] == "direction only (not significant) (no test)"
    tests.loc[2, "wilcoxon_p"] = 0.001  # now q = 0.003, 0.04, 0.04: all three supported
    out = {c["claim"]: c["verdict"] for c in X.claims(table, tests, sweep)}
    assert out["FND beats the N-pair student (Table 2, random negatives)"] == "supported (BH q = 0.04 over 3 tests)"
