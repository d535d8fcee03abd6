"""One writer per stage folder (issue 21): the claim ``RunFolder.begin_stage`` takes on a stage folder.

Two real processes ask for one stage: exactly one trains, the other waits for it and then reuses its
run (same config) or is refused by name (another config). A holder killed with SIGKILL leaves a claim
that a waiting process takes over, resuming from the holder's ``last.pt``. A claim from another host
is taken over once its heartbeat is older than the lease, waited for (or refused with
``claim_timeout=0``, naming host and pid) while it is fresh. A corrupt claim file is an error
naming it while it is young, abandoned once it is older than the lease.

The stage body here is a stand-in (:func:`fake_stage`: it writes a marker file per training, a
``last.pt`` holding an epoch count and a ``metrics.json``) so the tests take seconds; the real
training path killed mid-epoch and taken over is in tests/test_faults.py. Children are processes
forked from one warm server (multiprocessing's forkserver with fndkit preloaded), each with its
own pid.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from fndkit import rundir
from fndkit.artifacts import write_json
from fndkit.rundir import CLAIM_FILE, RunFolder, StageBusy, StageError, StageStatus

WAIT_S = 60  # the most any step of a test waits for a child (a shared 2-core box can be slow)


# --------------------------------------------------------------------------------------------
# The child: a stand-in stage body


def fake_stage(run_dir: str, stage: str, config: dict, out: str, name: str, gate: str | None = None,
               claim_timeout: float | None = None) -> None:
    """Claim ``stage`` and apply the rules; when it trains: leave ``trained-<name>`` in ``out``,
    write ``last.pt`` (one more epoch than the one it resumed from), say ``holding-<name>``, wait
    for the file ``gate`` (if any), write the metrics. ``result-<name>.json`` says what happened."""
    out_dir = Path(out)
    with open(out_dir / f"{name}.log", "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    run = RunFolder(run_dir)
    result = {"pid": os.getpid()}
    try:
        status, finished = run.begin_stage(stage, config, claim_timeout=claim_timeout)
    except StageError as exc:
        result.update(outcome="refused", kind=type(exc).__name__, error=str(exc))
    else:
        if finished is not None:
            result.update(outcome="reused", metrics=finished)
        else:
            try:
                folder = run.stage_dir(stage)
                resumed = json.loads((folder / "last.pt").read_text())["epoch"] if status is StageStatus.PARTIAL else 0
                (out_dir / f"trained-{name}").write_text(str(os.getpid()))
                write_json(folder / "last.pt", {"epoch": resumed + 1, "by": name})
                (out_dir / f"holding-{name}").touch()
                while gate and not Path(gate).exists():
                    time.sleep(0.05)
                metrics = {"by": name, "resumed_from": resumed}
                run.write_metrics(stage, metrics)
                result.update(outcome="trained", status=status.value, metrics=metrics)
            finally:
                run.end_stage(stage)
    write_json(out_dir / f"result-{name}.json", result)
    print("done", flush=True)


# --------------------------------------------------------------------------------------------
# The parent


@pytest.fixture(scope="module")
def ctx():
    ctx = multiprocessing.get_context("forkserver")
    # fndkit (and torch) imported once, in the server. Not this module: Python 3.11's forkserver
    # ignores the parent's sys.path, so it cannot import a test module and would skip it silently.
    ctx.set_forkserver_preload(["fndkit.rundir"])
    return ctx


def start(ctx, tmp_path: Path, name: str, config: dict, gate: Path | None = None, **kwargs):
    p = ctx.Process(target=fake_stage, args=(str(tmp_path / "run"), "student", config, str(tmp_path), name,
                                             str(gate) if gate else None), kwargs=kwargs)
    p.start()
    return p


def log(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.log"
    return path.read_text() if path.exists() else ""


def wait_until(what, why: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not what():
        if time.monotonic() > deadline:
            logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
            raise AssertionError(f"waited {WAIT_S} s for {why}; logs: {logs}")
        time.sleep(0.05)


def result(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / f"result-{name}.json").read_text())


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def plant_claim(folder: Path, host: str, pid: int, heartbeat: float, pid_start: str | None = None) -> Path:
    """A claim file as another process (or host) would have left it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM_FILE
    path.write_text(json.dumps({"host": host, "pid": pid, "pid_start": pid_start, "since": "then",
                                "started": heartbeat, "lease_s": 60.0, "heartbeat": heartbeat}))
    return path


# --------------------------------------------------------------------------------------------
# Two real processes


@pytest.mark.parametrize("second", ["same config", "other config"])
def test_two_processes_one_trains_the_other_waits(ctx, tmp_path, second):
    """A holds the claim and trains; B, started meanwhile, waits (naming A's pid and host), then
    reuses A's run, or is refused by name when it asked for another config. Only A trained."""
    gate = tmp_path / "go"
    a = start(ctx, tmp_path, "a", {"loss": "npair"}, gate)
    wait_until(lambda: (tmp_path / "holding-a").exists(), "A to hold the stage", tmp_path)
    b = start(ctx, tmp_path, "b", {"loss": "npair" if second == "same config" else "bpr"})
    waiting = f"is being trained by pid {a.pid} on host {socket.gethostname()}"
    wait_until(lambda: waiting in log(tmp_path, "b"), "B to wait for A", tmp_path)
    assert not (tmp_path / "result-b.json").exists()  # B is still waiting while A holds the stage
    gate.touch()
    for p in (a, b):
        p.join(WAIT_S)
        assert p.exitcode == 0
    assert sorted(p.name for p in tmp_path.glob("trained-*")) == ["trained-a"]
    assert result(tmp_path, "a")["outcome"] == "trained"
    folder = tmp_path / "run" / "student"
    if second == "same config":
        assert result(tmp_path, "b") == {"pid": b.pid, "outcome": "reused",
                                         "metrics": {"by": "a", "resumed_from": 0}}
    else:
        got = result(tmp_path, "b")
        assert got["outcome"] == "refused" and got["kind"] == "StageError"
        assert f"{folder} holds a finished run with another config" in got["error"]
    assert files(folder) == ["config.json", "last.pt", "metrics.json"]  # both claims released
    assert json.loads((folder / "config.json").read_text())["loss"] == "npair"


def test_sigkilled_holder_is_taken_over_and_resumed(ctx, tmp_path):
    """A writes last.pt (epoch 1) and is killed with SIGKILL while holding the stage; B, waiting,
    sees A's pid gone (a zombie: not reaped until the join below), takes the claim over and
    resumes from A's last.pt."""
    a = start(ctx, tmp_path, "a", {"loss": "npair"}, tmp_path / "never")
    wait_until(lambda: (tmp_path / "holding-a").exists(), "A to hold the stage", tmp_path)
    b = start(ctx, tmp_path, "b", {"loss": "npair"})
    wait_until(lambda: f"trained by pid {a.pid}" in log(tmp_path, "b"), "B to wait for A", tmp_path)
    os.kill(a.pid, signal.SIGKILL)
    b.join(WAIT_S)
    assert b.exitcode == 0, log(tmp_path, "b")
    a.join(WAIT_S)
    assert a.exitcode == -signal.SIGKILL
    assert f"taking over the claim of pid {a.pid} on host {socket.gethostname()}" in log(tmp_path, "b")
    assert "resuming student in " in log(tmp_path, "b")
    got = result(tmp_path, "b")
    assert got["outcome"] == "trained" and got["status"] == "partial"
    assert got["metrics"] == {"by": "b", "resumed_from": 1}
    folder = tmp_path / "run" / "student"
    assert json.loads((folder / "last.pt").read_text()) == {"epoch": 2, "by": "b"}
    assert files(folder) == ["config.json", "last.pt", "metrics.json"]


def test_claim_timeout_0_refuses_at_once_naming_holder(ctx, tmp_path):
    """A live process on this host holds the stage: claim_timeout=0 refuses with one line naming
    its host and pid, and leaves A's claim and work alone."""
    gate = tmp_path / "go"
    a = start(ctx, tmp_path, "a", {"loss": "npair"}, gate)
    wait_until(lambda: (tmp_path / "holding-a").exists(), "A to hold the stage", tmp_path)
    run = RunFolder(tmp_path / "run")
    with pytest.raises(StageBusy) as err:
        run.begin_stage("student", {"loss": "npair"}, claim_timeout=0)
    message = str(err.value)
    assert f"pid {a.pid} on host {socket.gethostname()}" in message
    assert "refusing at once (claim_timeout=0)" in message and "\n" not in message
    assert json.loads((tmp_path / "run" / "student" / CLAIM_FILE).read_text())["pid"] == a.pid
    gate.touch()
    a.join(WAIT_S)
    assert a.exitcode == 0 and result(tmp_path, "a")["outcome"] == "trained"


# --------------------------------------------------------------------------------------------
# Claims planted by hand: another host, a reused pid, a corrupt file


def test_stale_claim_from_another_host_is_taken_over(tmp_path, capsys):
    """A heartbeat an hour old on another host: taken over at once, and the partial stage resumed."""
    run = RunFolder(tmp_path / "run")
    folder = run.stage_dir("student")
    plant_claim(folder, "elsewhere.invalid", 4242, time.time() - 3600)
    write_json(folder / "config.json", {"loss": "npair", "run_dir": str(run.root)})
    write_json(folder / "last.pt", {"epoch": 1})
    status, finished = run.begin_stage("student", {"loss": "npair"}, claim_timeout=0)
    out = capsys.readouterr().out
    assert (status, finished) == (StageStatus.PARTIAL, None)
    assert "taking over the claim of pid 4242 on host elsewhere.invalid (no heartbeat for 3600 s" in out
    claim = json.loads((folder / CLAIM_FILE).read_text())
    assert (claim["host"], claim["pid"]) == (socket.gethostname(), os.getpid())
    run.end_stage("student")
    assert files(folder) == ["config.json", "last.pt"]


def test_fresh_claim_from_another_host_is_waited_for_or_refused(tmp_path, capsys):
    """A fresh heartbeat on another host: claim_timeout=0 refuses naming host and pid; a timeout of
    0.5 s refuses after waiting; without a timeout the process waits until the claim goes away."""
    run = RunFolder(tmp_path / "run")
    folder = run.stage_dir("student")
    claim = plant_claim(folder, "elsewhere.invalid", 4242, time.time())
    with pytest.raises(StageBusy, match=r"being trained by pid 4242 on host elsewhere\.invalid .*"
                                        r"refusing at once \(claim_timeout=0\)"):
        run.begin_stage("student", {"loss": "npair"}, claim_timeout=0)
    with pytest.raises(StageBusy, match=r"pid 4242 on host elsewhere\.invalid .*still held after waiting "
                                        r"\d+ s \(claim_timeout=0\.5\)"):
        run.begin_stage("student", {"loss": "npair"}, claim_timeout=0.5)
    capsys.readouterr()
    threading.Timer(1.0, claim.unlink).start()  # the other host's stage ends
    assert run.begin_stage("student", {"loss": "npair"}) == (StageStatus.NEW, None)
    lines = [line for line in capsys.readouterr().out.splitlines() if "is being trained by" in line]
    assert len(lines) == 1 and "pid 4242 on host elsewhere.invalid" in lines[0]  # one line, not one per poll
    run.end_stage("student")
    assert files(folder) == ["config.json"]


def test_pid_of_this_host_reused_by_another_process_is_stale(tmp_path, capsys):
    """A claim naming a live pid of this host whose start time differs (the pid now belongs to a
    later process) is taken over; with the right start time it is that live process's, refused."""
    if rundir._process_start(os.getppid()) is None:
        pytest.skip("no /proc here: a reused pid cannot be told apart")
    run = RunFolder(tmp_path / "run")
    folder = run.stage_dir("student")
    ppid, start = os.getppid(), rundir._process_start(os.getppid())
    plant_claim(folder, socket.gethostname(), ppid, time.time(), pid_start=start)
    with pytest.raises(StageBusy, match=f"pid {ppid} on host"):
        run.begin_stage("student", {"loss": "npair"}, claim_timeout=0)
    plant_claim(folder, socket.gethostname(), ppid, time.time(), pid_start=str(int(start) + 1))
    assert run.begin_stage("student", {"loss": "npair"}, claim_timeout=0) == (StageStatus.NEW, None)
    assert f"taking over the claim of pid {ppid}" in capsys.readouterr().out
    run.end_stage("student")


def test_unreadable_claim_is_stale_and_taken_over_with_one_line(tmp_path, capsys):
    """A claim is written whole under the claim lock, so one that does not read (cut short by a
    crash, not UTF-8, not JSON) holds no live holder: taken over at once, said in one line."""
    run = RunFolder(tmp_path / "run")
    folder = run.stage_dir("student")
    folder.mkdir(parents=True)
    claim = folder / CLAIM_FILE
    for garbage in (b'{"host": "half a reco', b"garbage\x00\xff"):
        claim.write_bytes(garbage)
        assert run.begin_stage("student", {"loss": "npair"}) == (StageStatus.NEW, None)
        out = capsys.readouterr().out
        assert out.count("taking over the claim") == 1
        assert "taking over the claim of pid ? on host ? (an unreadable claim file" in out
        run.end_stage("student")
        assert files(folder) == ["config.json"]


# --------------------------------------------------------------------------------------------
# The holder's side


def test_heartbeat_is_refreshed_in_place_and_claim_released(tmp_path, monkeypatch):
    """The heartbeat moves forward, the record keeps its length and stays readable; end_stage
    removes the claim (and the lock)."""
    monkeypatch.setattr(rundir, "CLAIM_HEARTBEAT_S", 0.05)
    run = RunFolder(tmp_path / "run")
    run.begin_stage("student", {"loss": "npair"})
    path = run.stage_dir("student") / CLAIM_FILE
    first = path.read_bytes()
    wait_until(lambda: path.read_bytes() != first, "a heartbeat", tmp_path)
    again = path.read_bytes()
    assert len(again) == len(first)
    a, b = json.loads(first), json.loads(again)
    assert b["heartbeat"] > a["heartbeat"] and {**b, "heartbeat": 0} == {**a, "heartbeat": 0}
    run.end_stage("student")
    assert files(run.stage_dir("student")) == ["config.json"]


def test_a_refused_or_reused_stage_keeps_no_claim_and_bad_timeouts_are_named(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.begin_stage("student", {"loss": "npair"})
    run.write_metrics("student", {"auc": 0.5})
    run.end_stage("student")
    assert run.begin_stage("student", {"loss": "npair"}) == (StageStatus.FINISHED_SAME, {"auc": 0.5})
    with pytest.raises(StageError, match="another config"):
        run.begin_stage("student", {"loss": "bpr"})
    assert files(run.stage_dir("student")) == ["config.json", "metrics.json"]
    for bad in (-1, "soon", True, float("nan")):
        with pytest.raises(StageError, match=rf"claim_timeout={bad!r} must be None"):
            run.begin_stage("other", {"loss": "npair"}, claim_timeout=bad)
    assert not run.stage_dir("other").exists()
