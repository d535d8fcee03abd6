"""The one executor: every Params field reaches its stage, the in-process and the notebook paths
write the same metrics, and run_plan orders, dedupes, blocks and limits as documented."""

import json

import papermill as pm
import pytest

from fndkit.config import DataConfig
from fndkit.plans import execute as jobs
from fndkit.plans.execute import KINDS, NOTEBOOK_DIR, Job, JobError, Local, params_for, run_plan
from fndkit.plans.study import Study
from fndkit.rundir import RunFolder
from fndkit.stages import autoencoder, cold_start, data, false_negatives, pretrain, training
from fndkit.viz import explorer


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    run = RunFolder(tmp_path_factory.mktemp("jobs") / "run")
    data.run(run, DataConfig(scale="tiny"))
    return run


class Captured(Exception):
    """Raised by a stand-in for the stage's work: carries what the stage passed on."""

    def __init__(self, *args, **kwargs):
        super().__init__("captured")
        self.call = (args, kwargs)


def _capture(*args, **kwargs):
    raise Captured(*args, **kwargs)


def _explorer_capture(run, **kwargs):
    raise Captured(str(run.root), **kwargs)


# each stage kind: where its work starts (patched to capture its arguments)
TARGETS = {"data": (data, "run"), "autoencoder": (autoencoder, "run"), "teacher": (training, "run"),
           "student": (training, "run"), "contrastive": (training, "run"), "baseline": (training, "run"),
           "false_negatives": (false_negatives, "run"), "cold_start": (cold_start, "run"),
           "explorer": (explorer, "SpaceExplorer"), "pretrain": (pretrain, "pretrain_backbone")}

# a valid value other than the default for every field (several fields where one needs another)
OTHER = {
    "source": {"source": "/tmp/somewhere"}, "format": {"source": "/tmp/somewhere", "format": "folder"},
    "subset": "519", "scale": "tiny", "variable_size": True, "taste_breadth": 1.3, "image_size": 64, "decode": "on_the_fly",
    "appearance": "rich",
    "cold_subset": "53", "seed": 1, "overwrite": True, "latent_dim": 8, "epochs": 3, "k_neighbours": 2,
    "device": "cpu", "backbone": "cnn-tiny", "weights": "/tmp/weights.pt", "max_steps_per_epoch": 2,
    "batch_size": 16, "lr": 0.02, "tau": 0.3, "n_negatives": 5, "hard_fraction": 0.5, "negatives": "per_pair",
    "snapshot_epochs": [1], "loss": "npair", "alpha": 2.0, "teacher_dir": "/tmp/teacher", "out_name": "elsewhere",
    "budget_epochs": 1, "augmentations": "erase,erase", "lam": 0.3, "tau_cl": 0.2, "autoencoder_dir": "/tmp/ae",
    "model": "fhn", "models": ["teacher"], "n_interactions": [2], "repetitions": 3, "delta": 0.1,
    "curve_interactions": [1], "cold_split": "pooled", "teacher": "student_npair", "alphas": [1.0],
    "n_per_positive": 2, "max_positives": 10, "aux_sets": 2, "student": None, "users": [1, 2], "method": "pca",
    "perplexity": 5, "n_neighbours": 4, "n_negatives_explorer": 7,
    "kd_weight": 0.25, "kd_temperature": 4.0, "rd_k": 3,
}


def _what_reaches_the_stage(monkeypatch, params) -> str:
    module, name = TARGETS[params.kind]
    if params.kind == "pretrain":  # its auxiliary items stand in as what it was asked for
        monkeypatch.setattr(pretrain, "auxiliary_items", lambda ds, n, seed: ("aux", n, seed))
        monkeypatch.setattr(pretrain.ItemSet, "of", staticmethod(lambda ds: "held out"))
        monkeypatch.setattr(pretrain, "resolve_device", lambda device: device)  # "auto" stays visible
    monkeypatch.setattr(module, name, _explorer_capture if params.kind == "explorer" else _capture)
    with pytest.raises(Captured) as caught:
        KINDS[params.kind].execute(params, progress=False)
    return json.dumps(caught.value.call, sort_keys=True, default=lambda o: repr(getattr(o, "__dict__", o)))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_params_field_reaches_the_stage(kind, tiny_data, monkeypatch):
    """Change one field at a time: what the stage receives must change (a dropped field fails)."""
    cls = KINDS[kind].params
    base = cls(run_dir=str(tiny_data.root))
    reference = _what_reaches_the_stage(monkeypatch, base)
    for name in cls.field_names():
        if name == "run_dir":
            continue
        other = OTHER["n_negatives_explorer"] if (kind == "explorer" and name == "n_negatives") else OTHER[name]
        changes = other if isinstance(other, dict) else {name: other}
        if kind == "explorer" and name == "student":
            changes = {"student": "contrastive"}
        changed = _what_reaches_the_stage(monkeypatch, base.replace(**changes))
        assert changed != reference, f"{kind}: {name} does not reach the stage"


def test_run_dir_reaches_the_stage(tiny_data, tmp_path, monkeypatch):
    a = _what_reaches_the_stage(monkeypatch, params_for("autoencoder", run_dir=str(tiny_data.root)))
    b = _what_reaches_the_stage(monkeypatch, params_for("autoencoder", run_dir=str(tmp_path)))
    assert a != b


def test_unknown_parameter_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) alhpa for the student stage .*valid: .*alpha"):
        params_for("student", alhpa=2.0)
    with pytest.raises(ValueError, match="stage kind 'nope' is unknown"):
        params_for("nope")


def _comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("stage", "epoch_seconds")}


@pytest.mark.notebook
def test_process_and_notebook_paths_write_the_same_metrics(tiny_data):
    common = {"run_dir": str(tiny_data.root), "loss": "npair", "epochs": 1, "max_steps_per_epoch": 3,
              "device": "cpu", "seed": 3}
    here = Job(params_for("student", out_name="by_process", **common))
    there = Job(params_for("student", out_name="by_notebook", **common))
    run_plan([here], via="process", progress=False)
    run_plan([there], via="notebook", progress=False)
    a = tiny_data.read_metrics("by_process")
    b = tiny_data.read_metrics("by_notebook")
    assert _comparable(a) == _comparable(b)
    assert (tiny_data.notebooks_dir / "by_notebook.ipynb").exists()
    injected = pm.inspect_notebook(str(NOTEBOOK_DIR / "03_student.ipynb"))
    assert set(injected) == set(there.params.to_dict())


def test_plan_orders_by_prerequisites_and_dedupes(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    plan = [Job(params_for("student", run_dir=a, loss="npair")), Job(params_for("teacher", run_dir=a)),
            Job(params_for("cold_start", run_dir=a)), Job(params_for("data", run_dir=b)),
            Job(params_for("data", run_dir=a)), Job(params_for("teacher", run_dir=a))]
    ordered = jobs.ordered(plan)
    assert [(j.run_dir, j.kind) for j in ordered] == [(a, "data"), (a, "teacher"), (a, "student"),
                                                      (a, "cold_start"), (b, "data")]


def test_failed_prerequisite_blocks_its_folder_only(tmp_path, monkeypatch):
    ran = []

    def fake(job, via="process", progress=False, **kw):
        ran.append((job.run_dir, job.kind))
        if job.kind == "data" and job.run_dir.endswith("bad"):
            raise JobError(f"{job.describe()} failed: broken on purpose", job)
        return {"ok": True}

    monkeypatch.setattr(jobs, "execute_job", fake)
    bad, good = str(tmp_path / "bad"), str(tmp_path / "good")
    plan = [Job(params_for(kind, run_dir=folder)) for folder in (bad, good) for kind in ("data", "teacher")]
    out = run_plan(plan, progress=False, on_failure="continue")
    assert ran == [(bad, "data"), (good, "data"), (good, "teacher")]
    assert [j.run_dir for j, _ in out.done] == [good, good]
    assert "broken on purpose" in out.failed[0][1] and [(j.run_dir, j.kind) for j in out.not_started] == [(bad, "teacher")]
    with pytest.raises(JobError, match="broken on purpose"):
        run_plan(plan, progress=False, on_failure="stop")


@pytest.mark.parametrize("bad, message", [({"via": "kernel"}, "via='kernel'"), ({"dispatch": Local(1), "workers": 2},
                                                                              "not both"),
                                          ({"time_limit": -1}, "time_limit=-1"),
                                          ({"on_failure": "ignore"}, "on_failure='ignore'")])
def test_bad_plan_arguments_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        run_plan([], **bad)


def test_bad_dispatcher_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="workers=0"):
        Local(0)
    with pytest.raises(ValueError, match="workers=0"):
        Study(tmp_path, workers=0)


def _fake_stage(ran):
    def fake(job, via="process", progress=False, **kw):
        ran.append((job.run_dir, job.kind, job.stage))
        if job.kind == "student" and job.stage == "broken":
            raise JobError(f"{job.describe()} failed: broken on purpose", job)
        return {"ok": True, "best_val_auc": 0.5}
    return fake


def _small_plan(root):
    a, b = str(root / "a"), str(root / "b")
    return [Job(params_for(kind, run_dir=folder, **extra)) for folder in (a, b)
            for kind, extra in (("data", {}), ("teacher", {}), ("student", {"loss": "npair", "out_name": "s1"}),
                                ("student", {"loss": "fnd", "out_name": "broken" if folder == a else "s2"}),
                                ("cold_start", {}))]


def _shape(outcome):
    return (sorted((j.run_dir[-1], j.stage) for j, _ in outcome.done),
            sorted((j.run_dir[-1], j.stage) for j, _ in outcome.failed),
            sorted((j.run_dir[-1], j.stage) for j in outcome.not_started))


def test_local_and_study_dispatch_run_one_plan_alike(tmp_path, monkeypatch):
    """One plan through Local and through the study storage: every job runs once, the same jobs
    finish, fail and are skipped, and the plan's record says the same."""
    ran_local, ran_study = [], []
    monkeypatch.setattr(jobs, "execute_job", _fake_stage(ran_local))
    local = run_plan(_small_plan(tmp_path), progress=False, on_failure="continue", record=tmp_path / "local.json")
    from fndkit.plans import study as study_module

    monkeypatch.setattr(study_module, "execute_job", _fake_stage(ran_study))
    queued = run_plan(_small_plan(tmp_path), progress=False, on_failure="continue", record=tmp_path / "study.json",
                      dispatch=Study(tmp_path / "queue"))
    assert sorted(ran_local) == sorted(ran_study) and len(ran_local) == len(set(ran_local)) == 10
    assert _shape(local) == _shape(queued)
    assert ("a", "broken") in _shape(local)[1]
    records = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "study")]
    assert [[(j["stage"], j["status"]) for j in r["jobs"]] for r in records][0] == \
        [[(j["stage"], j["status"]) for j in r["jobs"]] for r in records][1]
    assert records[0]["status"] == records[1]["status"] == "failed"
    # a second command on the same storage runs nothing again: the storage remembers what finished
    ran_again = []
    monkeypatch.setattr(study_module, "execute_job", _fake_stage(ran_again))
    again = run_plan(_small_plan(tmp_path), progress=False, on_failure="continue", dispatch=Study(tmp_path / "queue"))
    assert [r[2] for r in ran_again] == ["broken"]  # only the failed job is tried again
    assert _shape(again)[1] == [("a", "broken")]


def test_one_record_per_plan_root_keeps_every_call(tmp_path, monkeypatch):
    """A searched plan's two phases (and a rerun) write one record: the jobs of an earlier call that
    this call does not run stay in it, and its wall time adds up over the calls."""
    monkeypatch.setattr(jobs, "execute_job", _fake_stage([]))
    record = tmp_path / "plan.json"
    plan = _small_plan(tmp_path)
    run_plan(plan[:2], progress=False, record=record)  # phase one: data and teacher of folder a
    first = json.loads(record.read_text())
    run_plan(plan[5:7], progress=False, record=record)  # phase two: folder b's data and teacher
    second = json.loads(record.read_text())
    assert [(j["run_dir"][-1], j["kind"], j["status"]) for j in second["jobs"]] == \
        [("a", "data", "done"), ("a", "teacher", "done"), ("b", "data", "done"), ("b", "teacher", "done")]
    assert second["seconds_total"] == pytest.approx(first["seconds_total"] + second["seconds"], abs=0.11)
    run_plan(plan[:2], progress=False, record=record)  # a rerun of phase one: each job listed once
    assert len(json.loads(record.read_text())["jobs"]) == 4


def test_student_without_teacher_does_not_wait_for_it(tmp_path):
    run = str(tmp_path)
    teacher = Job(params_for("teacher", run_dir=run))
    npair = Job(params_for("student", run_dir=run, loss="npair"))
    fnd = Job(params_for("student", run_dir=run, loss="fnd"))
    baseline = Job(params_for("baseline", run_dir=run, model="fhn"))
    data = Job(params_for("data", run_dir=run))
    assert not npair.needs(teacher) and not baseline.needs(teacher) and fnd.needs(teacher)
    assert npair.needs(data) and fnd.needs(data)
    schedule = jobs.Schedule(jobs.ordered([data, teacher, npair, fnd, baseline]))
    schedule.end(data, True)
    assert {j.stage for j in schedule.ready()} == {"teacher", "student_npair", "fhn"} or \
        {j.kind for j in schedule.ready()} == {"teacher", "student", "baseline"}
    assert fnd.key not in {j.key for j in schedule.ready()}


def test_a_shared_pretraining_is_a_prerequisite_across_folders(tmp_path):
    from fndkit.stages.pretrain import weights_path

    pre = Job(params_for("pretrain", run_dir=str(tmp_path / "seed0"), backbone="cnn-small"))
    teacher1 = Job(params_for("teacher", run_dir=str(tmp_path / "seed1"),
                              weights=str(weights_path(pre.run_dir, "cnn-small"))))
    other = Job(params_for("teacher", run_dir=str(tmp_path / "seed1")))
    assert teacher1.needs(pre) and not other.needs(pre)


def test_time_limit_starts_nothing_more(tmp_path, monkeypatch):
    import time as _time

    ran = []

    def slow(job, **kw):
        ran.append(job.kind)
        _time.sleep(0.3)
        return {}

    monkeypatch.setattr(jobs, "execute_job", slow)
    plan = [Job(params_for(kind, run_dir=str(tmp_path))) for kind in ("data", "autoencoder", "teacher")]
    out = run_plan(plan, progress=False, time_limit=0.1)
    assert ran == ["data"] and [j.kind for j in out.not_started] == ["autoencoder", "teacher"]


def test_a_plan_leaves_the_callers_thread_count_as_it_was(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(jobs, "execute_job", lambda job, **kw: {"threads": torch.get_num_threads()})
    before = torch.get_num_threads()
    seen = []
    run_plan([Job(params_for("data", run_dir=str(tmp_path)))], progress=False, dispatch=Local(1, threads=1),
             on_done=lambda job, metrics, rec: seen.append(metrics["threads"]))
    assert seen == [1] and torch.get_num_threads() == before
