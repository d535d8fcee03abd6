"""The validation search as a plan transformer, on both dispatchers (tiny data, a few steps an
epoch): the chosen point is the validation argmax and the test candidates are never scored during
the search; the chosen trial is adopted; on the study storage every point runs exactly once with two
worker processes, a deliberately bad learning rate is pruned (and never chosen), a SIGKILLed worker's
trial is failed, enqueued again and resumed from its last.pt; TensorBoard's event files hold the
expected tags; bad input is refused in one line before any training."""

import json
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from fndkit import cli
from fndkit.plans import paper as P
from fndkit.plans import search as S
from fndkit.plans import study as Q
from fndkit.plans.execute import JobError, run_plan
from fndkit.stages import training

EPOCHS = Q.PRUNER_WARMUP + 2  # long enough for the pruner's warm-up


def smoke(job, epochs=EPOCHS):
    if job.kind in ("teacher", "student", "contrastive", "baseline"):
        return job.with_params(max_steps_per_epoch=2, **({"epochs": epochs} if job.kind != "teacher" else {}))
    return job.with_params(epochs=1) if job.kind == "autoencoder" else job


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A tiny run folder with its prerequisites (data, autoencoder, teacher)."""
    sweep = P.Sweep(tmp_path_factory.mktemp("search"), seeds=(0,), quick=True, device="cpu", machine="test-machine")
    run_plan([smoke(j) for j in P.prerequisites(sweep, 0)], progress=False)
    return sweep


def trials_for(sweep, method, values, epochs=EPOCHS):
    base = smoke(P.method_run(method, sweep, 0, experiment="search"), epochs)
    return S.trials(method, base, S.restrict(method, values))


def test_chosen_point_is_the_validation_argmax_and_test_is_never_read(sweep, monkeypatch):
    trials = trials_for(sweep, "fnd", {"alpha": [1.0, 2.5]})
    assert [t.stage for t in trials] == ["search-fnd-alpha1", "search-fnd-alpha2.5"]
    splits = []
    real = training.evaluate

    def spy(model, ds, split="test", **kw):
        splits.append(split)
        return real(model, ds, split=split, **kw)

    monkeypatch.setattr(training, "evaluate", spy)
    monkeypatch.setattr("fndkit.train.evaluate", spy)
    outcome = run_plan(trials, progress=False)
    assert "test" not in splits and set(splits) == {"val_student"}  # every epoch validated, nothing else
    folder = sweep.seed_dir(0)
    val = {t.shown["alpha"]: json.loads((folder / t.stage / "metrics.json").read_text()) for t in trials}
    assert all(m["test"] == {} and m["test_evaluated"] is False for m in val.values())
    assert not (folder / trials[0].stage / "per_user_auc.json").exists()
    chosen = S.best_on_validation(trials, outcome)
    best = max(val, key=lambda a: (val[a]["best_val_auc"], -a))
    assert chosen["values"] == {"alpha": best} and chosen["val_auc"] == pytest.approx(val[best]["best_val_auc"])
    assert chosen["trials"] == 2 and chosen["pruned"] == 0
    # a tie goes to the first point in declaration order
    monkeypatch.setattr(S, "validation_auc", lambda job: 0.5)
    assert S.best_on_validation(trials)["values"] == {"alpha": 1.0}
    monkeypatch.undo()
    # the chosen point is what Table 2's FND row trains with; FND-CL takes FND's α
    sweep.chosen = {"fnd": chosen["values"]}
    job = smoke(P.method_run("fnd", sweep, 0))
    assert job.params.alpha == best and job.stage == "student_fnd"
    assert P.method_run("fnd-cl", sweep, 0).params.alpha == best
    # ... and at the search seed that row adopts the chosen trial: no epoch is trained again, the
    # test set is scored only now, after the choice
    assert S.adopt(chosen["stage"], job)
    assert (folder / "student_fnd" / "last.pt").exists() and not (folder / "student_fnd" / "metrics.json").exists()
    resumed, splits = [], []
    monkeypatch.setattr(training, "evaluate", spy)
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: resumed.append(k.get("resume")) or real_fit(*a, **k))
    run_plan([job], progress=False)
    final = json.loads((folder / "student_fnd" / "metrics.json").read_text())
    assert resumed == [True] and splits == ["test"]
    assert json.loads((folder / "student_fnd" / "history.json").read_text()) == \
        json.loads((folder / chosen["stage"] / "history.json").read_text())
    assert final["best_val_auc"] == pytest.approx(val[best]["best_val_auc"]) and final["test"]["random"]["auc"] > 0
    sweep.chosen = {}


def test_tensorboard_events_hold_the_scalars(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stage = sweep.seed_dir(0) / "search-fnd-alpha1"
    if not stage.exists():
        pytest.skip("needs the argmax test's trials")
    acc = EventAccumulator(str(stage))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/auc", "val/ndcg_lpae", "lr", "train/flagged_fraction", "train/flag_precision",
            "train/flag_recall"} <= tags
    history = json.loads((stage / "history.json").read_text())
    assert [e.value for e in acc.Scalars("val/auc")] == pytest.approx([h["val_auc"] for h in history])


def _study(sweep, prefix, **kw):
    return Q.Study(sweep.folder, None, prefix, sweep.identity(), **kw)


def _trials(sweep, prefix, method):
    storage = Q.open_storage(None, sweep.folder)
    return optuna.load_study(study_name=f"{prefix}:search-{method}", storage=storage).get_trials()


def test_bad_learning_rate_is_pruned_and_never_chosen(sweep):
    trials = trials_for(sweep, "npair", {"lr": [0.03, 0.01]}) + \
        [S.trials("npair", smoke(P.method_run("npair", sweep, 0)), {"lr": [1e-9]})[0]]
    outcome = run_plan(trials, progress=False, dispatch=_study(sweep, "prune"))
    by_lr = {t.params["lr"]: t for t in _trials(sweep, "prune", "npair")}
    # pruned at the first epoch after the warm-up, and trained no further
    assert by_lr[1e-9].state == TrialState.PRUNED and by_lr[1e-9].user_attrs["last_epoch"] == Q.PRUNER_WARMUP + 1
    history = json.loads((Path(by_lr[1e-9].user_attrs["stage_dir"]) / "history.json").read_text())
    assert len(history) == Q.PRUNER_WARMUP + 1
    assert by_lr[0.03].state == by_lr[0.01].state == TrialState.COMPLETE
    chosen = S.best_on_validation(trials, outcome)
    assert chosen["pruned"] == 1 and chosen["values"]["lr"] != 1e-9
    # a second command reads the same choice back from the storage, pruned trial still out
    again = run_plan(trials, progress=False, dispatch=_study(sweep, "prune"))
    assert S.best_on_validation(trials, again) == chosen


@pytest.mark.slow  # each point once with two workers: also test_two_workers_share_a_postgresql_storage
def test_every_point_runs_exactly_once_with_two_workers(sweep):
    trials = trials_for(sweep, "bpr", {"tau": [0.05, 0.2, 0.5]})
    run_plan(trials, progress=False, dispatch=_study(sweep, "two", workers=2, prune=False))
    stored = _trials(sweep, "two", "bpr")
    assert sorted(t.params["tau"] for t in stored) == [0.05, 0.2, 0.5]
    assert all(t.state == TrialState.COMPLETE for t in stored)
    assert len({t.user_attrs["worker"]["pid"] for t in stored}) in (1, 2)
    for t in stored:  # each trained its epochs once (a second training would restart the history)
        history = json.loads((Path(t.user_attrs["stage_dir"]) / "history.json").read_text())
        assert [h["epoch"] for h in history] == list(range(1, len(history) + 1)) and len(history) >= 2


def _run_worker(trials, root, identity):
    import torch

    torch.set_num_threads(1)
    run_plan(trials, progress="quiet", dispatch=Q.Study(root, None, "kill", identity, prune=False))


def test_killed_worker_trial_is_failed_requeued_and_resumed(sweep, monkeypatch):
    trials = [smoke(t, epochs=3) for t in trials_for(sweep, "fnd", {"alpha": [1.5]})]
    stage = sweep.seed_dir(0) / trials[0].stage
    child = Q.worker_context().Process(target=_run_worker, args=(trials, sweep.folder, sweep.identity()))
    child.start()
    deadline = time.time() + 120
    while time.time() < deadline:  # killed as soon as its first epoch is committed
        if (stage / "last.pt").exists() and (stage / "history.json").exists():
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert [t.state for t in _trials(sweep, "kill", "fnd")] == [TrialState.RUNNING]
    resumed = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: resumed.append(k.get("resume")) or real_fit(*a, **k))
    run_plan(trials, progress=False, dispatch=Q.Study(sweep.folder, None, "kill", sweep.identity(), prune=False))
    stored = _trials(sweep, "kill", "fnd")
    assert [t.state for t in stored] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "no longer running" in stored[0].user_attrs["stale"]
    assert stored[1].user_attrs["resumed_from_trial"] == stored[0].number
    assert resumed == [True]  # from last.pt, not from scratch
    assert [h["epoch"] for h in json.loads((stage / "history.json").read_text())] == [1, 2, 3]


def test_a_failed_job_is_named_and_stops_the_plan(sweep):
    bad = smoke(P.stage_job(sweep, 0, "student", "student_bad", loss="npair", lr=-1.0))
    with pytest.raises(JobError, match=r"student_bad failed.*lr=-1"):
        run_plan([bad], progress=False, dispatch=_study(sweep, "fail"))
    # what another worker (or a rerun) finds: the failure in the storage, named
    storage = Q.open_storage(None, sweep.folder)
    failed = optuna.load_study(study_name="fail:jobs", storage=storage).get_trials()
    assert [t.state for t in failed] == [TrialState.FAIL] and "lr=-1" in failed[0].user_attrs["error"]


def test_bad_input_is_one_line_before_training(sweep, tmp_path, capsys):
    base = ["--quick", "--root", str(tmp_path / "bad"), "--device", "cpu"]
    cases = [(["search", "nope", *base], "method 'nope' is unknown"),
             (["search", "fnd", *base, "--values", "fnd.alpha=7"], "fnd: alpha=7.0 is outside the declared space"),
             (["search", "fnd", *base, "--values", "fnd.beta=1"], "'beta' is not in its search space"),
             (["search", "fnd", *base, "--storage", "redis://x"], "is not a storage"),
             (["search", "fnd", *base, "--storage", "postgresql://u:secret@127.0.0.1:9/db"], "is unreachable"),
             (["paper", "fig99", *base], "unknown experiment(s) fig99"),
             (["paper", "table2", *base, "--values", "zzz.lr=1"], "'zzz', which is not searched here"),
             (["paper", "table2", *base[:-2], "--root", str(tmp_path / "file.txt")], "is a file")]
    (tmp_path / "file.txt").write_text("not a folder")
    for argv, needle in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1 and "secret" not in err, err
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").rglob("search-*"))
    # a study another plan created: its folder differs
    storage = Q.open_storage(str(tmp_path / "shared.journal"), sweep.folder)
    Q.open_study(storage, "owned:search-fnd", {"folder": "/elsewhere", "scale": "tiny", "quick": True})
    with pytest.raises(Q.StudyError, match="created by another plan.*--study-prefix"):
        Q.Study(sweep.folder, str(tmp_path / "shared.journal"), "owned", sweep.identity()).check(["fnd"])


def test_unsearchable_names_are_said_when_the_search_starts():
    lines = S.describe_unsearchable(S.baselines())
    for line in lines:
        method = line.split(":")[0]
        assert set(S.unsearchable(method)) and all(name in line for name in S.unsearchable(method))
    assert all(not S.unsearchable(m) for m in ("npair", "bpr", "fnd", "fnd-cl"))


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


def test_two_workers_share_a_postgresql_storage(sweep, postgres_url):
    """Two worker processes (two machines' stand-ins) on one PostgreSQL server: each grid point once;
    a job both workers enqueue is enqueued once (the advisory lock)."""
    trials = trials_for(sweep, "npair", {"lr": [0.003, 0.03]})
    teacher = smoke(P.prerequisites(sweep, 0)[2])
    run_plan([teacher, *trials], progress=False,
             dispatch=Q.Study(sweep.folder, postgres_url, "pg", sweep.identity(), workers=2, prune=False))
    storage = Q.open_storage(postgres_url, sweep.folder)
    stored = optuna.load_study(study_name="pg:search-npair", storage=storage).get_trials()
    assert sorted(t.params["lr"] for t in stored) == [0.003, 0.03]
    assert all(t.state == TrialState.COMPLETE for t in stored)
    assert len(optuna.load_study(study_name="pg:jobs", storage=storage).get_trials()) == 1  # the teacher
    study = optuna.load_study(study_name="pg:jobs", storage=storage)
    from sqlalchemy import create_engine, text

    probe = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :key"
    with Q.enqueue_lock(study._storage), probe.connect() as conn:
        assert conn.execute(text(held), {"key": Q.ENQUEUE_LOCK_KEY}).scalar() == 1
    with probe.connect() as conn:
        assert conn.execute(text(held), {"key": Q.ENQUEUE_LOCK_KEY}).scalar() == 0
    probe.dispose()
    with pytest.raises(Q.StudyError, match="created by another plan"):
        Q.Study(sweep.folder, postgres_url, "pg", {**sweep.identity(), "folder": "/other"}).check(["npair"])


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
    assert 1.4 < record["wall_seconds"] < 30


def test_the_choice_does_not_depend_on_the_worker_count(tmp_path):
    """Threads fixed per job: one worker and two workers train the same trials to the same numbers,
    so the search chooses the same point."""
    from fndkit.plans.execute import Local

    import shutil

    chosen, val = {}, {}
    for workers in (1, 2):
        sweep = P.Sweep(tmp_path / f"w{workers}", seeds=(0,), quick=True, device="cpu", machine="m")
        if workers == 1:
            run_plan([smoke(j) for j in P.prerequisites(sweep, 0)], progress=False, dispatch=Local(1, threads=1))
        else:  # the same prerequisites (trained once above): only the trials run again
            shutil.copytree(tmp_path / "w1", tmp_path / "w2", ignore=shutil.ignore_patterns("search-*"))
        trials = trials_for(sweep, "fnd", {"alpha": [1.0, 2.5]}, epochs=2)  # no pruning here: 2 epochs do
        outcome = run_plan(trials, progress=False, dispatch=Local(workers, threads=1))
        chosen[workers] = S.best_on_validation(trials, outcome)["values"]
        val[workers] = [S.validation_auc(t) for t in trials]
    assert chosen[1] == chosen[2] and val[1] == val[2]
