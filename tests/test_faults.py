"""Faults (issue 17): a training stage killed with SIGKILL mid-epoch and started again ends exactly
where an uninterrupted run ends — teacher, FND student and FND-CL, bitwise on CPU; the same seed
gives the same files and another seed other ones; Ctrl-C stops the notebook chain cleanly and the
same command continues it.

**How a child is killed at a known point.** A child runs :func:`mini_chain` (the tiny chain as
library calls: data, autoencoder, teacher, FND student, FND-CL and cold start, with tiny dims and 4 steps an epoch). A *pause point* ``(stage, epoch, step)`` makes it, right after
that optimizer step, write a marker file and sleep; the parent waits for the marker, kills the
child with SIGKILL, then starts the very same call again. The marker now exists, so the new child
resumes past that point (and pauses at the next one). Kills land mid-epoch by construction, with
nothing being written at that moment; what a kill during a write leaves (a ``.last.pt.tmp-*``
folder) is planted by hand before one restart and must be ignored and cleared.

**Processes.** The reference run is a fresh interpreter (``python tests/test_faults.py RUN SEED``,
its own PYTHONHASHSEED); the killed, repeated and other-seed runs are children forked from one warm
server (multiprocessing's forkserver with fndkit preloaded: ~1 s a child instead of ~6 s), so the
comparison also spans interpreters. Each runs torch on one thread, and the reference, repeated and
other-seed runs go alongside the killed one.

Timing keys ("seconds", "epoch_seconds") and the folder location ("run_dir") are the only things
allowed to differ. Every run refuses network access (:func:`forbid_network`): the chain needs none. Slow tests (``--runslow``): the same through papermill — two tiny chains with one
seed, one of them stopped by a real Ctrl-C during 02_teacher and continued, and a chain with another
seed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fndkit import cli, stages
from fndkit.plans import chain as pipeline
from fndkit.artifacts import load_checkpoint, write_json
from fndkit.config import DataConfig
from fndkit.rundir import CLAIM_FILE, RunFolder
from fndkit.stages import training
from fndkit.train import Callback

HERE = Path(__file__).resolve()
TRAIN = dict(epochs=3, max_steps_per_epoch=4, dim=16, heads=2, batch_size=8, device="cpu", backbone="cnn-small")
TRAINED = ("teacher", "student_fnd", "contrastive")
# (stage, epoch, step), 1-based: mid-epoch 2 of the teacher; the FND student in its first epoch
# (nothing to resume: it starts over) and again in its last; FND-CL mid-epoch 2, whose views come
# from the generator state saved at the end of epoch 1
KILLS = [("teacher", 2, 2), ("student_fnd", 1, 2), ("student_fnd", 3, 1), ("contrastive", 2, 3)]
TIMING = ("seconds",)  # any key containing it
LOCATION = ("run_dir",)
CHILD_TIMEOUT_S = 300


# --------------------------------------------------------------------------------------------
# The child


class PauseAt(Callback):
    """After step ``step`` of epoch ``epoch`` of ``stage`` (once: a marker file remembers it),
    write the marker and sleep until killed."""

    def __init__(self, stage: str, points, marker_dir: Path | None):
        self.stage, self.marker_dir = stage, marker_dir
        self.points = {(e, s) for st, e, s in points if st == stage}

    def on_batch_end(self, t):
        epoch, step = t.state.epoch + 1, t.step + 1
        if (epoch, step) not in self.points:
            return
        marker = self.marker_dir / f"{self.stage}-e{epoch}-s{step}.json"
        if marker.exists():
            return
        write_json(marker, {"stage": self.stage, "epoch": epoch, "step": step,
                            "epochs_done": t.state.epoch, "pid": os.getpid()})
        time.sleep(3600)


def forbid_network() -> None:
    """From here on, any network connection or name lookup in this process fails: the chain must
    need none (every child and the reference run call this, so a finished chain shows it)."""
    def refuse(*args, **kwargs):
        raise RuntimeError(f"network access at run time: {args} {kwargs}")

    for name in ("connect", "connect_ex"):
        real = getattr(socket.socket, name)
        setattr(socket.socket, name, lambda self, address, _real=real: (
            refuse(address) if self.family in (socket.AF_INET, socket.AF_INET6) else _real(self, address)))
    socket.getaddrinfo = socket.gethostbyname = socket.create_connection = refuse


def mini_chain(run_dir, seed: int = 0, pauses=(), marker_dir=None, stop_after: str | None = None) -> None:
    """The tiny chain as library calls, into ``run_dir`` (every stage reused or resumed when
    already there, exactly as the notebooks do); ``stop_after`` a training stage ends it there."""
    # one intra-op thread: the runs go side by side on a 2-core machine without oversubscribing it
    # (bitwise agreement needs the same thread count before and after a kill, not a particular one)
    torch.set_num_threads(1)
    forbid_network()
    run_dir = Path(run_dir)
    marker_dir = Path(marker_dir) if marker_dir else None
    ds = stages.data.run(run_dir, DataConfig(scale="tiny", seed=seed))
    RunFolder(run_dir).write_metrics("data", stages.data.summary(ds, seed=seed))
    stages.autoencoder.run(run_dir, latent_dim=8, epochs=1, k_neighbours=3, seed=seed, device="cpu",
                           progress=False)
    for stage, role, params in (("teacher", "teacher", {}), ("student_fnd", "student", {"loss": "fnd"}),
                                ("contrastive", "student", {"loss": "fnd", "lam": 0.2})):
        cfg = training.train_config(run_dir, role, seed=seed, **TRAIN, **params)
        training.run(run_dir, stage, cfg, progress=False, callbacks=[PauseAt(stage, pauses, marker_dir)])
        if stage == stop_after:
            return
    result = stages.cold_start.run(run_dir, ["teacher", "student_fnd", "contrastive"], n_interactions=(1,),
                                   curve_interactions=(1, 2), repetitions=2, seed=seed, device="cpu",
                                   progress=False)
    RunFolder(run_dir).write_metrics("cold_start", result)


def child_main(run_dir, seed, pauses, marker_dir, log, stop_after=None) -> None:
    """A forked child: its output goes to ``log`` (shown when a test fails)."""
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    start = time.perf_counter()
    mini_chain(run_dir, seed, pauses, marker_dir, stop_after)
    print(f"chain done in {time.perf_counter() - start:.1f} s wall, {time.process_time():.1f} s CPU")


# --------------------------------------------------------------------------------------------
# The parent


class Children:
    """Children forked from one warm server process (see the module docstring)."""

    def __init__(self, log_dir: Path):
        self.ctx = multiprocessing.get_context("forkserver")
        # fndkit, torch … imported once, in the server. Python 3.11's forkserver ignores the parent's
        # sys.path, so this test module (in tests/) is found there only from that folder; the fndkit
        # modules always are (else every child imported torch again: several seconds each)
        self.ctx.set_forkserver_preload([__name__, "fndkit.stages", "fndkit.plans.chain"])
        self.log_dir = log_dir

    def start(self, run_dir, seed=0, pauses=(), marker_dir=None, name="child", stop_after=None):
        log = self.log_dir / f"{name}.log"
        p = self.ctx.Process(target=child_main, args=(str(run_dir), seed, list(pauses),
                                                      str(marker_dir) if marker_dir else None, str(log),
                                                      stop_after))
        p.start()
        p.log = log
        return p


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text()[-n:] if path.exists() else "(no log)"


def run_to_end(p) -> None:
    p.join(CHILD_TIMEOUT_S)
    assert p.exitcode == 0, f"child ended with {p.exitcode}:\n{tail(p.log)}"


def run_until_paused(p, marker_dir: Path, seen: set) -> dict | None:
    """Wait until ``p`` pauses at a new marker (then SIGKILL it and return the marker) or ends
    (None)."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        new = sorted(set(marker_dir.glob("*.json")) - seen)
        if new:
            seen.add(new[0])
            p.kill()  # SIGKILL: no handler, no cleanup, no flush
            p.join(30)
            assert p.exitcode == -signal.SIGKILL, f"exit {p.exitcode}:\n{tail(p.log)}"
            return json.loads(new[0].read_text())
        if p.exitcode is not None:
            assert p.exitcode == 0, f"child ended with {p.exitcode}:\n{tail(p.log)}"
            return None
        time.sleep(0.05)
    p.kill()
    raise AssertionError(f"child neither paused nor ended in {CHILD_TIMEOUT_S} s:\n{tail(p.log)}")


def train_state(stage_dir: Path) -> dict | None:
    last = stage_dir / "last.pt"
    return load_checkpoint(last)["extra"]["train_state"] if last.exists() else None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("faults"))


def make_runs(root: Path) -> dict:
    """Run folders ``ref`` (fresh interpreter), ``again`` (same seed), ``other`` (seed 1) and
    ``killed`` (killed at every point of KILLS and restarted until it finished); ``kills``: what
    each killed child had done when it was killed."""
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    ref = subprocess.Popen([sys.executable, str(HERE), str(root / "ref"), "0"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children = Children(root)
    side = [children.start(root / "again", 0, name="again"),  # these two alongside the killed run
            children.start(root / "other", 1, name="other", stop_after="teacher")]
    markers = root / "markers"
    markers.mkdir()
    killed, seen, kills = root / "killed", set(), []
    for attempt in range(len(KILLS) + 1):
        p = children.start(killed, 0, KILLS, markers, name=f"killed-{attempt}")
        marker = run_until_paused(p, markers, seen)
        if marker is None:
            break
        stage_dir = killed / marker["stage"]
        state = train_state(stage_dir)
        claim = stage_dir / CLAIM_FILE  # the killed holder's claim, left behind for the restart to take over
        kills.append({**marker, "last_pt_epoch": state["epoch"] if state else None,
                      "finished": (stage_dir / "metrics.json").exists(), "child_pid": p.pid,
                      "claim_pid": json.loads(claim.read_text())["pid"] if claim.exists() else None,
                      "restart_log": str(root / f"killed-{attempt + 1}.log")})
        if marker["stage"] == "teacher":  # what a kill in the middle of writing last.pt leaves
            stale = stage_dir / ".last.pt.tmp-killed"
            stale.mkdir()
            (stale / "last.pt").write_bytes(b"half a checkpoint")
    else:
        raise AssertionError(f"the killed run did not finish after {len(KILLS)} restarts")
    for p in side:
        run_to_end(p)
    out, _ = ref.communicate(timeout=CHILD_TIMEOUT_S)
    assert ref.returncode == 0, out[-3000:]
    return {"root": root, "ref": root / "ref", "again": root / "again", "other": root / "other",
            "killed": killed, "kills": kills, "restarts": attempt}


# --------------------------------------------------------------------------------------------
# Comparing run folders


def strip(obj):
    """``obj`` without timing keys and location keys (recursively)."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items()
                if not (isinstance(k, str) and (any(t in k for t in TIMING) or k in LOCATION))}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def differences(a, b, where="") -> list[str]:
    """Where two loaded artifacts differ (tensors and arrays bitwise)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [where]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return [] if np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where} keys {sorted(set(a) ^ set(b))}"]
        return [d for k in sorted(a, key=str) for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return []
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def load_artifact(path: Path):
    if path.suffix == ".json":
        return strip(json.loads(path.read_text()))
    if path.suffix == ".pt":
        payload = load_checkpoint(path)
        keep = {"state_dict": payload["state_dict"], "config": strip(payload["config"]),
                "metrics": strip(payload["metrics"])}
        if "train_state" in payload.get("extra", {}):
            keep["train_state"] = strip(payload["extra"]["train_state"])
        return keep
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    return path.read_bytes()


def files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def folder_differences(a: Path, b: Path) -> list[str]:
    if files_of(a) != files_of(b):
        return [f"{a.name}: files {sorted(set(files_of(a)) ^ set(files_of(b)))}"]
    return [d for name in files_of(a)
            for d in differences(load_artifact(a / name), load_artifact(b / name), f"{a.name}/{name}")]


def stage_folders(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.is_dir())


# --------------------------------------------------------------------------------------------
# Tests


def test_every_kill_landed_mid_epoch(runs):
    """The child was killed where the plan said, with the state a kill there leaves: its stage's
    claim (issue 21) still naming it, which the next child took over."""
    got = [(k["stage"], k["epoch"], k["step"], k["last_pt_epoch"], k["finished"]) for k in runs["kills"]]
    # last.pt holds the epochs finished before the one killed (none for a first epoch)
    assert got == [("teacher", 2, 2, 1, False), ("student_fnd", 1, 2, None, False),
                   ("student_fnd", 3, 1, 2, False), ("contrastive", 2, 3, 1, False)]
    assert runs["restarts"] == len(KILLS)
    for k in runs["kills"]:  # the killed child held its stage's claim; the restart took it over
        assert k["claim_pid"] == k["pid"] == k["child_pid"]
        assert f"taking over the claim of pid {k['pid']} on host {socket.gethostname()} (pid {k['pid']} is no " \
               f"longer running)" in Path(k["restart_log"]).read_text()
    for stage in TRAINED:  # every epoch recorded once, in order, after the restarts
        history = json.loads((runs["killed"] / stage / "history.json").read_text())
        assert [h["epoch"] for h in history] == [1, 2, 3], stage


@pytest.mark.parametrize("stage", ["teacher", "student_fnd", "contrastive"])
def test_killed_and_resumed_stage_equals_uninterrupted(runs, stage):
    """Same best epoch, same test metrics, and every artifact bitwise equal: weights, optimizer
    and scheduler state, the objective's generator, history (timings aside)."""
    ref, killed = runs["ref"] / stage, runs["killed"] / stage
    a, b = json.loads((ref / "metrics.json").read_text()), json.loads((killed / "metrics.json").read_text())
    assert a["best_epoch"] == b["best_epoch"] and a["test"] == b["test"]
    assert folder_differences(ref, killed) == []
    if stage == "contrastive":  # the view generator was restored, not restarted
        state = train_state(killed)
        assert state["objective"]["rng"] == train_state(ref)["objective"]["rng"]


def test_whole_killed_chain_equals_uninterrupted(runs):
    """Everything else too (data, autoencoder, cold start), and the planted half-written
    temporary was never read and is gone."""
    assert stage_folders(runs["killed"]) == stage_folders(runs["ref"])
    diffs = [d for s in stage_folders(runs["ref"]) for d in folder_differences(runs["ref"] / s, runs["killed"] / s)]
    assert diffs == []
    assert not list((runs["killed"] / "teacher").glob(".*tmp*"))


def test_same_seed_same_files_other_seed_other_numbers(runs):
    """Two runs with seed 0 (two interpreters) agree on every file but timings; seed 1 (a chain
    up to the teacher) differs in every stage's metrics."""
    ref, again, other = runs["ref"], runs["again"], runs["other"]
    assert stage_folders(again) == stage_folders(ref)
    assert [d for s in stage_folders(ref) for d in folder_differences(ref / s, again / s)] == []
    for stage in ("data", "autoencoder", "teacher"):
        a = strip(json.loads((ref / stage / "metrics.json").read_text()))
        b = strip(json.loads((other / stage / "metrics.json").read_text()))
        assert differences(a, b), f"{stage}: seed 1 gave the metrics of seed 0"
    auc = {r: json.loads((runs[r] / "teacher" / "metrics.json").read_text())["test"]["random"]["auc"]
           for r in ("ref", "other")}
    assert auc["ref"] != auc["other"]


def test_stage_killed_after_its_last_epoch_says_it_resumes(runs, tmp_path, capsys):
    """last.pt of the last epoch but no metrics.json: nothing is trained again, the metrics are
    those the run would have written."""
    run = tmp_path / "run"
    shutil.copytree(runs["ref"] / "data", run / "data")
    cfg = training.teacher_config(run, **{**TRAIN, "epochs": 1, "max_steps_per_epoch": 2})
    first = training.run(run, "teacher", cfg, progress=False)
    (run / "teacher" / "metrics.json").unlink()
    capsys.readouterr()
    again = training.run(run, "teacher", cfg, progress=False)
    assert "resuming teacher from epoch 1 of 1" in capsys.readouterr().out
    assert differences(strip(again), strip(first)) == []


def test_early_stop_survives_a_kill_before_the_metrics(runs, tmp_path):
    """EarlyStopping's decision is in last.pt (written after every callback): a stage stopped
    early and killed before its metrics.json does not train on when started again. (lr 1e-12
    leaves the float32 weights bitwise unchanged, so epoch 2 cannot beat epoch 1.)"""
    run = tmp_path / "run"
    shutil.copytree(runs["ref"] / "data", run / "data")
    cfg = training.teacher_config(run, **{**TRAIN, "epochs": 4, "max_steps_per_epoch": 2, "patience": 1, "lr": 1e-12})
    first = training.run(run, "teacher", cfg, progress=False)
    assert first["stopped_early"] and first["epochs_run"] == 2
    (run / "teacher" / "metrics.json").unlink()
    again = training.run(run, "teacher", cfg, progress=False)
    assert again["stopped_early"] and again["epochs_run"] == 2
    assert differences(strip(again), strip(first)) == []


# --------------------------------------------------------------------------------------------
# The notebook chain (what `make demo` runs); Ctrl-C in it, simulated, is in tests/test_bad_input.py


def test_seed_reaches_every_notebook():
    assert all(job.params.seed == 3 for job in pipeline.default_chain("tiny", seed=3))
    assert all(job.params.seed == 0 for job in pipeline.default_chain("tiny"))
    assert cli.main(["chain", "--seed", "-1"]) == 2


# --------------------------------------------------------------------------------------------
# The same through papermill (slow)


def chain_command(run_dir: Path, seed: int = 0, only: str = "") -> list[str]:
    cmd = [sys.executable, "-m", "fndkit", "chain", "--run-dir", str(run_dir), "--scale", "tiny", "--seed", str(seed)]
    return cmd + (["--only", only] if only else [])


def metrics_of(run_dir: Path) -> dict:
    return {p.parent.name: strip(json.loads(p.read_text())) for p in sorted(run_dir.glob("*/metrics.json"))}


@pytest.mark.slow
@pytest.mark.notebook
def test_papermill_chain_ctrl_c_continue_and_seeds(tmp_path):
    """`python -m fndkit chain --scale tiny` (what `make demo` runs): a Ctrl-C to the whole
    process group (as a terminal sends it) while 02_teacher trains stops the chain with exit
    code 130 and status "interrupted"; the same command continues it, and the run ends with the
    same metrics.json files as an uninterrupted chain with the same seed. Seed 1 differs.

    One torch thread (OMP_NUM_THREADS=1): with two, FND-CL's weights differ between two processes
    in the last float bit (a multithreaded CPU kernel torch does not flag as nondeterministic),
    and the cold-start rows that use it by up to ~3e-5 AUC; the other stages agree bitwise."""
    env = {**os.environ, "FNDKIT_PNG": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    plain = subprocess.run(chain_command(tmp_path / "plain"), env=env, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr[-3000:]
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(chain_command(stopped), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (stopped / "teacher" / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "rerun the same command to continue" in err
    record = json.loads((stopped / "pipeline.json").read_text())
    assert record["status"] == "interrupted"
    again = subprocess.run(chain_command(stopped), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing the run" in again.stdout
    assert metrics_of(stopped) == metrics_of(tmp_path / "plain")
    other = subprocess.run(chain_command(tmp_path / "other", seed=1, only="00_data,02_teacher"), env=env,
                           capture_output=True, text=True)
    assert other.returncode == 0, other.stderr[-3000:]
    for stage in ("data", "teacher"):
        assert metrics_of(tmp_path / "other")[stage] != metrics_of(tmp_path / "plain")[stage], stage


if __name__ == "__main__":  # the reference run of the `runs` fixture: a fresh interpreter
    mini_chain(sys.argv[1], int(sys.argv[2]))
