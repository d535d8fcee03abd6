"""What a training stage says: "starting" for a new stage, "resuming <stage> from epoch k" only
with a last.pt to resume, a refusal that names each differing key with both values (raised by
StagePlan.check before any training is announced), and a device that is no part of a stage's
identity (a stage finished on the CPU is reused when device="auto" asks for it)."""

import json

import pytest

from fndkit import stages
from fndkit.artifacts import save_checkpoint
from fndkit.config import DataConfig, TrainConfig
from fndkit.rundir import config_differences
from fndkit.stages.training import StagePlan

TINY = dict(loss="npair", epochs=1, max_steps_per_epoch=2, dim=16, heads=2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    stages.prepare_data(run, DataConfig(scale="tiny", seed=0))
    return run


def test_fresh_stage_starts_and_a_cpu_run_is_reused_by_auto(run_dir, capsys):
    cfg = stages.student_config(run_dir, device="cpu", **TINY)
    stages.train_stage(run_dir, "student_cpu", cfg, progress=False)
    out = capsys.readouterr().out
    assert f"starting student_cpu in {run_dir / 'student_cpu'}" in out
    assert "resuming" not in out
    before = (run_dir / "student_cpu" / "checkpoint.pt").stat().st_mtime_ns
    auto = cfg.replace(device="auto")
    StagePlan(run_dir, "student_cpu", auto, {"overwrite": False}).check()  # not refused
    metrics = stages.train_stage(run_dir, "student_cpu", auto, progress=False)
    out = capsys.readouterr().out
    assert "reusing it" in out and "starting" not in out
    assert (run_dir / "student_cpu" / "checkpoint.pt").stat().st_mtime_ns == before
    assert metrics == json.loads((run_dir / "student_cpu" / "metrics.json").read_text())


def test_refusal_names_the_differing_keys_before_training(run_dir, capsys):
    cfg = stages.student_config(run_dir, device="cpu", **TINY)
    stages.train_stage(run_dir, "student_lr", cfg, progress=False)
    capsys.readouterr()
    other = cfg.replace(lr=0.03, tau=0.2)
    with pytest.raises(stages.StageError) as refused:
        StagePlan(run_dir, "student_lr", other, {"overwrite": False}).check()
    text = str(refused.value)
    assert "holds a finished run with another config" in text
    assert "lr: 0.01 there, 0.03 here" in text and "tau: 0.1 there, 0.2 here" in text
    assert "device" not in text
    with pytest.raises(stages.StageError, match="lr: 0.01 there, 0.03 here"):
        stages.train_stage(run_dir, "student_lr", other, progress=False)
    assert "starting" not in capsys.readouterr().out
    StagePlan(run_dir, "student_lr", other, {"overwrite": True}).check()  # overwrite: no refusal


def test_a_run_whose_training_ended_resumes_from_its_last_epoch(run_dir, capsys):
    cfg = stages.student_config(run_dir, device="cpu", **TINY)
    first = stages.train_stage(run_dir, "student_kill", cfg, progress=False)
    (run_dir / "student_kill" / "metrics.json").unlink()  # killed after last.pt, before its metrics
    capsys.readouterr()
    again = stages.train_stage(run_dir, "student_kill", cfg, progress=False)
    out = capsys.readouterr().out
    assert "resuming student_kill from epoch 1 of 1: its training had ended, so nothing is trained" in out
    assert "starting" not in out
    assert again["best_val_auc"] == first["best_val_auc"]


def test_resume_line_names_the_epoch_of_last_pt(tmp_path):
    from fndkit.rundir import _resuming

    folder = tmp_path / "student"
    folder.mkdir()
    cfg = TrainConfig(epochs=5)
    save_checkpoint(folder / "last.pt", state_dict={}, config={"train": cfg.to_dict()}, metrics={},
                    extra={"train_state": {"epoch": 3, "stopped_early": False}})
    assert _resuming("student", folder).startswith("resuming student from epoch 3 of 5 (a last.pt placed there "
                                                   "without a config.json")  # the search's hand-over
    (folder / "config.json").write_text("{}")
    assert _resuming("student", folder).startswith("resuming student from epoch 3 of 5 (its last.pt")
    (folder / "last.pt").write_text("not a checkpoint")
    assert _resuming("student", folder).startswith(f"resuming student in {folder} (its last.pt")


def test_config_differences():
    old = {"stage": "s", "run_dir": "/a", "train": TrainConfig(lr=0.01, device="cpu").to_dict(), "teacher_dir": None}
    new = {"stage": "s", "run_dir": "/b", "train": TrainConfig(lr=0.03, device="cuda").to_dict(),
           "teacher_dir": "t", "evaluate_test": False}
    assert config_differences(old, new) == ["evaluate_test: absent there, False here",
                                            "teacher_dir: None there, 't' here", "lr: 0.01 there, 0.03 here"]
    assert config_differences(old, {**old, "run_dir": "/elsewhere"}) == []
