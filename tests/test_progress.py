"""The chain's live progress: what a run folder says about the training stage in progress, the
time-left estimates (closed form), the console lines and the seconds-per-notebook table."""

import io
import json
import os
import time

import pytest

from fndkit import progress
from fndkit.progress import ChainProgress, TrainingStatus, format_duration, summary_table
from fndkit.rundir import RunFolder


def write(path, obj, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def history(n, seconds=(4.0, 6.0, 5.0), aucs=(0.70, 0.80, 0.75)):
    return [{"epoch": e + 1, "loss": 3.0 - e, "val_auc": aucs[e], "seconds": seconds[e]} for e in range(n)]


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (42.4, "42s"), (185, "3m05s"), (3720, "1h02m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_training_progress_picks_the_training_stage_changed_last(tmp_path):
    run = RunFolder(tmp_path)
    now = time.time()
    write(tmp_path / "teacher" / "config.json", {"train": {"epochs": 30}}, now - 100)
    write(tmp_path / "teacher" / "history.json", history(2), now - 50)
    write(tmp_path / "student_fnd" / "config.json", {"train": {"epochs": 12}}, now - 10)
    write(tmp_path / "explorer" / "config.json", {"train": {"epochs": 1}}, now)  # not a model folder
    write(tmp_path / "cold_start" / "history.json", [], now)
    # the newest training stage: the student that has just started (no history yet)
    got = run.training_progress(since=now - 60)
    assert got == {"stage": "student_fnd", "epochs": 12, "history": [], "finished": False}
    # asked from before the student started but after it: nothing changed
    assert run.training_progress(since=now - 5) is None
    # a non-training folder (no "train" section) is skipped for the next newest
    write(tmp_path / "student_fnd" / "config.json", {"stage": "x"}, now - 10)
    got = run.training_progress(since=now - 60)
    assert got["stage"] == "teacher" and len(got["history"]) == 2 and got["epochs"] == 30
    write(tmp_path / "teacher" / "metrics.json", {}, now - 40)
    assert run.training_progress(since=now - 60)["finished"] is True
    assert RunFolder(tmp_path / "missing").training_progress() is None


def test_training_status_closed_form():
    status = TrainingStatus.from_progress({"stage": "teacher", "epochs": 10, "history": history(3)})
    assert (status.epoch, status.best_epoch, status.best_val_auc) == (3, 2, 0.80)
    assert status.epoch_seconds == pytest.approx(5.0)
    assert status.seconds_left() == pytest.approx((10 - 3) * 5.0)  # an upper bound: early stopping
    assert status.describe() == "teacher epoch 3/10, loss 1.000, val AUC 0.750 (best 0.800), 5.0 s/epoch"
    assert status.summary() == {"stage": "teacher", "epochs_run": 3, "epochs": 10, "epoch_seconds": 5.0,
                                "best_epoch": 2, "best_val_auc": 0.80}
    started = TrainingStatus.from_progress({"stage": "teacher", "epochs": 10, "history": []})
    assert started.seconds_left() is None and started.describe() == "teacher epoch 1/10 running"
    done = TrainingStatus.from_progress({"stage": "teacher", "epochs": 10, "history": history(3), "finished": True})
    assert done.seconds_left() == 0.0
    assert TrainingStatus.from_progress(None) is None


def test_chain_estimate_scales_the_reference_by_this_machine(tmp_path, monkeypatch):
    monkeypatch.setitem(progress.REFERENCE_SECONDS, "unit", {"a": 10.0, "b": 30.0, "c": 60.0})
    display = ChainProgress(RunFolder(tmp_path), ["a", "b", "c"], scale="unit", enabled=False)
    assert display.speed() == 1.0
    display.finished["a"] = 20.0  # this machine took twice the reference
    assert display.speed() == pytest.approx(2.0)
    # in b after 10 s without training: 30*2 - 10 = 50 here, then c: 60*2 = 120
    assert display.chain_left("b", 10.0, None) == (pytest.approx(170.0), False)
    line = display.status_line("b", 10.0, None)
    assert line == "[2/3] b 10s | ~2m50s left"
    # a training notebook's own bound replaces its reference
    training = TrainingStatus.from_progress({"stage": "teacher", "epochs": 10, "history": history(3)})
    line = display.status_line("b", 10.0, training)
    assert line.endswith("| ≤ 35s here, ~2m35s left")  # 35 + 120
    # a later notebook without a reference: the estimate says it is a lower bound
    display.labels = ["a", "b", "c", "new"]
    assert display.status_line("b", 10.0, None).endswith("~2m50s+ left")
    # a scale without a profile gives no chain estimate
    assert ChainProgress(RunFolder(tmp_path), ["a"], scale="other", enabled=False).status_line("a", 3, None) == "[1/1] a 3s"


def test_notebook_lines_in_a_log(tmp_path):
    """Not a terminal: a line per finished epoch, then the notebook's ✓ line with its training."""
    run = RunFolder(tmp_path)
    stream = io.StringIO()
    display = ChainProgress(run, ["02_teacher"], stream=stream, interval=0.01, heartbeat=1000)
    with display.notebook("02_teacher") as live:
        write(tmp_path / "teacher" / "config.json", {"train": {"epochs": 5}})
        write(tmp_path / "teacher" / "history.json", history(1))
        deadline = time.time() + 10
        while "epoch 1/5," not in stream.getvalue() and time.time() < deadline:
            time.sleep(0.01)
    lines = stream.getvalue().splitlines()
    assert any(line.startswith("[1/1] 02_teacher") and "teacher epoch 1/5, loss 3.000" in line for line in lines)
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("✓ 02_teacher ") and "(teacher: 1 epochs, 4.0 s/epoch, best val AUC 0.700 at epoch 1)" in lines[-1]
    assert live["training"]["epochs_run"] == 1 and live["seconds"] > 0
    assert display.finished == {"02_teacher": live["seconds"]}


def test_failed_notebook_is_marked_and_quiet_display_prints_nothing(tmp_path):
    stream = io.StringIO()
    display = ChainProgress(RunFolder(tmp_path), ["x"], stream=stream, interval=0.01)
    with pytest.raises(RuntimeError):
        with display.notebook("x"):
            raise RuntimeError("boom")
    assert stream.getvalue().splitlines()[-1].startswith("✗ x ")
    assert display.finished == {}
    quiet = io.StringIO()
    with ChainProgress(RunFolder(tmp_path), ["x"], stream=quiet, enabled=False).notebook("x") as live:
        pass
    assert quiet.getvalue() == "" and "seconds" in live


def test_summary_table():
    steps = [{"label": "00_data", "seconds": 10.0},
             {"label": "02_teacher", "seconds": 30.0,
              "training": {"stage": "teacher", "epochs_run": 6, "epoch_seconds": 4.5}}]
    table = summary_table(steps).splitlines()
    assert table[2] == "| 00_data | 10 | 25% |  |"
    assert table[3] == "| 02_teacher | 30 | 75% | teacher: 6 epochs × 4.5 s |"
    assert table[4] == "| **total** | **40** | 100% | 40s |"
