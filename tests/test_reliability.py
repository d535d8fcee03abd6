"""Issue 32's held-out cases, one test each (the numbers are the issue's): nothing lost, nothing
silently wrong. Every stage that writes the run folder goes through its claim and a reuse /
refuse rule keyed by its configuration (1); non-finite numbers are refused at the boundary (2);
a stage never writes into the run's own inputs (3); an unreadable claim is stale (4); a corrupt
file is named with the fix, before any training (6); a stage is finished only when what its
reuse needs loads (7); smaller ones (9); and the library checks the command line calls (8).

Everything runs in-process on the tiny benchmark (a teacher of 2 steps), except case 1's race,
which needs a second process to hold the data folder's claim.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fndkit import rundir
from fndkit.artifacts import jsonable
from fndkit.config import ConfigError, DataConfig, TrainConfig
from fndkit.rundir import CLAIM_FILE, RunFolder, StageError
from fndkit.stages import cold_start, data, false_negatives, training
from fndkit.stages import pretrain as pretrain_stage

TRAIN = dict(epochs=1, max_steps_per_epoch=2, batch_size=8, device="cpu", backbone="cnn-small")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny run folder with data and a finished teacher (each test works on a copy)."""
    root = tmp_path_factory.mktemp("reliability") / "run"
    data.run(root, DataConfig(scale="tiny", seed=0))
    training.run(root, "teacher", training.teacher_config(root, **TRAIN), progress=False)
    return root


@pytest.fixture
def run(base, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(base, copy)
    return copy


def contents(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def student(run, **changes):
    return training.StudentParams(run_dir=str(run), loss="fnd", **{**TRAIN, **changes})


# --------------------------------------------------------------------------------------------
# 1. One writer for every stage, and a reuse / refuse rule keyed by its configuration

HOLDER = textwrap.dedent("""
    import sys, time
    from fndkit.config import DataConfig
    from fndkit.stages import data
    build = data.build_dataset
    def slow_build(*args, **kwargs):
        print("building", flush=True)
        time.sleep(4)           # long enough for the other 00_data to start meanwhile
        return build(*args, **kwargs)
    data.build_dataset = slow_build
    data.run(sys.argv[1], DataConfig(scale="tiny", seed=0))
    print("done", flush=True)
""")


def test_two_data_stages_at_once_never_mix(tmp_path):
    """Issue case 1: while one 00_data (seed 0) builds into a new folder, another (seed 1) starts:
    it waits for the first, then is refused by name; the folder holds the first's dataset."""
    folder = tmp_path / "new"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "building"
        with pytest.raises(StageError, match=r"already holds dataset .*seed.: 0.*overwrite=True"):
            data.run(folder, DataConfig(scale="tiny", seed=1))
        out, _ = holder.communicate(timeout=120)
    finally:
        holder.kill()
    assert holder.returncode == 0, out
    built = RunFolder(folder).data_description()["meta"]["data_config"]
    assert built["seed"] == 0
    assert not (folder / "data" / CLAIM_FILE).exists()   # released


def test_same_data_config_is_reused(run):
    before = contents(run / "data")
    ds = data.run(run, DataConfig(scale="tiny", seed=0))
    assert ds.fingerprint() == RunFolder(run).dataset().fingerprint()
    assert contents(run / "data") == before


@pytest.mark.parametrize("kind", ["data", "pretrain", "cold_start", "false_negatives", "explorer"])
def test_every_writing_stage_claims_its_folder(kind, run, monkeypatch):
    """Each stage that writes the run folder holds its folder's claim while it decides and
    writes (the claim is what makes a second process wait)."""
    from fndkit.viz import explorer

    claimed = []
    acquire = rundir.StageClaim.acquire

    def spy(folder, timeout=None):
        claimed.append(Path(folder).name)
        return acquire(folder, timeout)

    monkeypatch.setattr(rundir.StageClaim, "acquire", staticmethod(spy))
    monkeypatch.setenv("FNDKIT_PNG", "0")
    tiny_pretrain = dict(backbone="cnn-tiny", aux_sets=1, epochs=1, device="cpu")
    if kind == "data":
        data.execute(data.Params(run_dir=str(run), scale="tiny"), progress=False)
    elif kind == "pretrain":
        pretrain_stage.execute(pretrain_stage.Params(run_dir=str(run), **tiny_pretrain), progress=False)
    elif kind == "cold_start":
        cold_start.execute(cold_start.Params(run_dir=str(run), models=["teacher"], n_interactions=[1],
                                             repetitions=1, curve_interactions=[1], device="cpu"), progress=False)
    elif kind == "false_negatives":
        false_negatives.execute(false_negatives.Params(run_dir=str(run), max_positives=50, device="cpu"))
    else:
        explorer.execute(explorer.Params(run_dir=str(run), student=None, method="pca", n_negatives=5))
    expected = {"data": "data", "pretrain": "pretrain", "cold_start": "cold_start",
                "false_negatives": "false_negatives", "explorer": "explorer"}[kind]
    assert expected in claimed
    assert not list(run.rglob(CLAIM_FILE))   # every claim released


def test_pretraining_is_reused_by_configuration_only(run, monkeypatch):
    """Issue case 1 (pre-training): today's rule reused the old weights whatever the parameters
    said. Same configuration (another device included): reused; another one: refused by name."""
    params = pretrain_stage.Params(run_dir=str(run), backbone="cnn-tiny", aux_sets=1, epochs=1, device="cpu")
    first = pretrain_stage.execute(params, progress=False)
    weights = Path(first["weights"]).read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished pre-training with this configuration must be reused")

    monkeypatch.setattr(pretrain_stage, "pretrain_backbone", no_training)
    again = pretrain_stage.execute(params.replace(device="auto"), progress=False)
    assert again["held_out_accuracy"] == first["held_out_accuracy"]
    with pytest.raises(StageError, match=r"cnn-tiny\.pt was pre-trained with epochs=1 \(asked: 2\).*delete"):
        pretrain_stage.execute(params.replace(epochs=2), progress=False)
    assert Path(first["weights"]).read_bytes() == weights


def test_pca_and_tsne_explorers_keep_both_results(run, monkeypatch):
    from fndkit.viz import explorer

    monkeypatch.setenv("FNDKIT_PNG", "0")
    common = dict(run_dir=str(run), student=None, n_negatives=5, perplexity=5)
    pca = explorer.execute(explorer.Params(method="pca", **common))
    tsne = explorer.execute(explorer.Params(method="tsne", **common))
    saved = RunFolder(run).read_metrics("explorer")
    assert set(saved["by_method"]) == {"pca", "tsne"}
    assert saved["by_method"]["pca"]["per_user"] == pca["per_user"]
    assert saved["by_method"]["tsne"]["method"] == tsne["method"] == "tsne"
    assert (run / "explorer" / "space_pca.html").exists() and (run / "explorer" / "space_tsne.html").exists()


def test_cold_start_is_reused_by_configuration(run, monkeypatch):
    params = cold_start.Params(run_dir=str(run), models=["teacher"], n_interactions=[1], repetitions=1,
                               curve_interactions=[1], device="cpu")
    first = cold_start.execute(params, progress=False)
    monkeypatch.setattr(cold_start, "run", lambda *a, **k: pytest.fail("same configuration: reuse"))
    reused = cold_start.execute(params.replace(device="auto"), progress=False)
    assert reused["rows"] == jsonable(first["rows"])
    monkeypatch.undo()
    other = cold_start.execute(params.replace(repetitions=2), progress=False)
    assert other["repetitions"] == 2 and RunFolder(run).read_metrics("cold_start")["repetitions"] == 2


def test_false_negative_lab_is_reused_by_configuration_and_inputs(run, monkeypatch):
    params = false_negatives.Params(run_dir=str(run), max_positives=50, device="cpu")
    first = false_negatives.execute(params)
    monkeypatch.setattr(false_negatives, "run", lambda *a, **k: pytest.fail("same configuration: reuse"))
    assert false_negatives.execute(params.replace(device="auto")) == jsonable(first)
    monkeypatch.undo()
    ckpt = run / "teacher" / "checkpoint.pt"   # a retrained teacher is another input
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))
    calls = []
    real = false_negatives.run
    monkeypatch.setattr(false_negatives, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    false_negatives.execute(params)
    assert calls == [1]


# --------------------------------------------------------------------------------------------
# 2. Finite numbers only


@pytest.mark.parametrize("make,name", [
    (lambda v: training.TeacherParams(tau=v), "tau"),
    (lambda v: training.StudentParams(alpha=v), "alpha"),
    (lambda v: training.StudentParams(lr=v), "lr"),
    (lambda v: training.ContrastiveParams(lam=v), "lam"),
    (lambda v: cold_start.Params(tau=v), "tau"),
    (lambda v: false_negatives.Params(alphas=[1.0, v]), "alphas"),
    (lambda v: data.Params(taste_breadth=v), "taste_breadth"),
    (lambda v: TrainConfig(tau=v), "tau"),
    (lambda v: TrainConfig(alpha=v), "alpha"),
    (lambda v: DataConfig(scale="tiny", taste_breadth=v), "taste_breadth"),
])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_refused_naming_the_parameter(make, name, value):
    with pytest.raises(ConfigError, match=rf"^{name}=.*(inf|nan).* must be a finite number") as caught:
        make(value)
    assert "\n" not in str(caught.value)


def test_tau_inf_never_trains(run):
    """Issue case 2: -p tau inf trained with a constant loss and left a finished stage."""
    before = contents(run)
    with pytest.raises(ConfigError, match=r"tau=inf must be a finite number"):
        training.execute(training.TeacherParams(run_dir=str(run), tau=math.inf, overwrite=True, **TRAIN),
                         progress=False)
    assert contents(run) == before


# --------------------------------------------------------------------------------------------
# 3. out_name never names the run's own inputs


@pytest.mark.parametrize("params", [
    lambda run: student(run, out_name="data", overwrite=True),
    lambda run: student(run, out_name="teacher", overwrite=True),
    lambda run: student(run, out_name="teacher"),
    lambda run: student(run, out_name="autoencoder", overwrite=True),
    lambda run: student(run, out_name="decoded_images", overwrite=True),
    lambda run: student(run, out_name="notebooks", overwrite=True),
    lambda run: student(run, out_name="pretrain", overwrite=True),
    lambda run: training.ContrastiveParams(run_dir=str(run), out_name="autoencoder", overwrite=True, **TRAIN),
    lambda run: training.BaselineParams(run_dir=str(run), model="fhn", out_name="teacher", overwrite=True,
                                        epochs=1, device="cpu"),
], ids=["data", "teacher", "teacher-no-overwrite", "autoencoder", "decoded_images", "notebooks", "pretrain",
        "contrastive-autoencoder", "baseline-teacher"])
def test_out_name_of_the_runs_own_inputs_is_refused_before_anything_is_deleted(params, run):
    (run / "notebooks").mkdir()
    (run / "notebooks" / "00_data.ipynb").write_text("{}")
    before = contents(run)
    p = params(run)
    with pytest.raises(StageError, match=rf"out_name='{p.out_name}' would write into .*an input of this run; "
                                         rf"pass another out_name"):
        training.execute(p, progress=False)
    assert contents(run) == before


# --------------------------------------------------------------------------------------------
# 4. An unreadable claim is a stale claim


def test_claim_with_invalid_utf8_is_taken_over_once(run, capsys):
    """Issue case 4: printf 'garbage\\x00\\xff' > teacher/.claim.json blocked the stage for good
    with a raw UnicodeDecodeError. Now: taken over, said once, the finished teacher reused."""
    (run / "teacher" / CLAIM_FILE).write_bytes(b"garbage\x00\xff")
    metrics = training.run(run, "teacher", training.teacher_config(run, **TRAIN), progress=False)
    assert metrics["stage"] == "teacher"
    out = capsys.readouterr().out
    assert out.count("taking over the claim") == 1 and "unreadable claim file" in out
    assert not (run / "teacher" / CLAIM_FILE).exists()


# --------------------------------------------------------------------------------------------
# 6. One reader: corruption named with the file and the fix


def test_garbage_teacher_metrics_stops_the_student_before_it_trains(run):
    """Issue case 6: the student trained, then its notebook failed in the comparison cell."""
    (run / "teacher" / "metrics.json").write_text("garbage")
    with pytest.raises(StageError, match=r"teacher/metrics\.json is not valid JSON \(line 1, column 1.*\); "
                                         r"delete the teacher folder, or rerun notebooks/02_teacher\.ipynb "
                                         r"with overwrite=True"):
        training.execute(student(run), progress=False)
    assert not (run / "student_fnd").exists()


def test_garbage_teacher_config_is_named_not_a_type_error(run):
    """Issue case 6: a garbage teacher/config.json gave TypeError: JSONDecodeError.__init__()."""
    (run / "teacher" / "config.json").write_bytes(b"\xff garbage")
    with pytest.raises(StageError, match=r"teacher/config\.json is not valid JSON \(byte 0: not UTF-8\); "
                                         r"delete the teacher folder"):
        training.execute(student(run), progress=False)
    with pytest.raises(StageError, match=r"teacher/config\.json is not valid JSON"):
        training.run(run, "teacher", training.teacher_config(run, **TRAIN), progress=False)
    # the fix the message names works: overwrite reads nothing of the old run
    metrics = training.run(run, "teacher", training.teacher_config(run, **TRAIN), progress=False, overwrite=True)
    assert (run / "teacher" / "checkpoint.pt").exists() and metrics["epochs_run"] == 1


def test_garbage_dataset_description_is_named(run):
    (run / "data" / "dataset.json").write_text("{")
    with pytest.raises(StageError, match=r"data/dataset\.json is not valid JSON \(line 1.*\); delete the data "
                                         r"folder.*, or rerun notebooks/00_data\.ipynb with overwrite=True"):
        RunFolder(run).dataset()


# --------------------------------------------------------------------------------------------
# 7. Finished only when every file its reuse needs loads


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_teacher_without_a_loadable_checkpoint_is_not_finished(run, damage):
    """Issue case 7: after rm teacher/checkpoint.pt, 02_teacher "reused" it (rc 0) and 03_student
    kept saying "run 02_teacher first"."""
    ckpt = run / "teacher" / "checkpoint.pt"
    ckpt.unlink() if damage == "missing" else ckpt.write_bytes(b"not a checkpoint")
    cfg = training.teacher_config(run, **TRAIN)
    with pytest.raises(StageError, match=r"teacher has a metrics\.json but cannot be reused: checkpoint\.pt "
                                         r"(is missing|does not load).*rerun notebooks/02_teacher\.ipynb with "
                                         r"overwrite=True"):
        training.run(run, "teacher", cfg, progress=False)
    training.run(run, "teacher", cfg, progress=False, overwrite=True)
    assert rundir.RunFolder(run).check_loads(ckpt) is None


# --------------------------------------------------------------------------------------------
# 9. Smaller ones


def test_missing_dataset_json_is_named(run):
    (run / "data" / "dataset.json").unlink()
    with pytest.raises(StageError, match=r"its dataset\.json is missing") as caught:
        RunFolder(run).dataset()
    assert "data/ folder is missing" not in str(caught.value)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_dataset_with_a_broken_table_is_named(run, damage):
    tables = run / "data" / "tables.npz"
    tables.unlink() if damage == "missing" else tables.write_bytes(tables.read_bytes()[:100])
    with pytest.raises(StageError, match=r"the dataset in .*data does not load .*rerun notebooks/00_data"):
        data.run(run, DataConfig(scale="tiny", seed=0))   # the same config: reuse needs it to load


def test_reusing_a_finished_teacher_leaves_its_training_curve(run, monkeypatch):
    from fndkit.viz.figures import training_figure

    monkeypatch.setenv("FNDKIT_PNG", "0")
    training_figure(run, "teacher")
    curve = run / "teacher" / "training_curve.html"
    first = curve.stat().st_mtime_ns
    time.sleep(0.01)
    training.run(run, "teacher", training.teacher_config(run, **TRAIN), progress=False)   # reused
    training_figure(run, "teacher")
    assert curve.stat().st_mtime_ns == first


def test_device_is_not_part_of_a_stage(run, capsys):
    """A teacher finished on "cpu" is reused when asked for with device "auto"."""
    metrics = training.run(run, "teacher", training.teacher_config(run, **{**TRAIN, "device": "auto"}),
                           progress=False)
    assert metrics["stage"] == "teacher" and "reusing it" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# 8. What the command line checks before any work (the parser calls these)


def test_run_dir_is_checked_before_any_work(tmp_path):
    from fndkit.rundir import check_run_dir

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for bad, pattern in ((a_file, r"which is a file, not a folder"),
                         (a_file / "below", r"lies under .*a_file, which is a file"),
                         ("", r"must be a folder")):
        with pytest.raises(StageError, match=pattern):
            check_run_dir(bad)
    new = tmp_path / "not" / "yet"
    assert check_run_dir(new) == new and not (tmp_path / "not").exists()   # creates nothing
    if os.geteuid() == 0 or os.access("/proc", os.W_OK):
        with pytest.raises(StageError, match=r"cannot create folders in /proc"):
            check_run_dir("/proc/forbidden")


@pytest.mark.parametrize("make,pattern", [
    (lambda: pretrain_stage.Params(epochs=0), r"epochs=0 must be an integer >= 1"),
    (lambda: pretrain_stage.Params(aux_sets=-1), r"aux_sets=-1 must be an integer >= 1"),
    (lambda: training.TeacherParams(epochs=0), r"epochs=0 must be at least 1"),
    (lambda: training.StudentParams(max_steps_per_epoch=0), r"max_steps_per_epoch=0 must be at least 1"),
    (lambda: training.StudentParams(epochs=1.5), r"epochs=1.5 must be an integer"),
])
def test_params_refuse_counts_below_one(make, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make()
