"""Several processes train like one: torchrun + gloo on CPU, on tiny data.

- the sharded loader splits exactly the batches one process loads;
- ``python -m fndkit train`` takes the notebook's parameters (one schema) and nothing else;
- two gloo processes launched by torchrun train FND-CL (FND teacher signal, contrastive term,
  split evaluation) like one process at the same global batch, and rank 0 alone writes the run
  folder;
- a run stopped under torchrun resumes to the same result as one that never stopped;
- the collective helpers agree with one-process references.

Tolerance: one epoch on tiny data (4 steps of 32). Two processes add the halves of each batch's
gradient in another order than one process, and training amplifies such float differences (after
8 steps they reach 1e-5 of the weights, as do 1 and 2 threads in one process), so the comparison
stops after one epoch: losses agree to 1e-5, test AUCs to 1e-4 (measured: the losses to 1.3e-7,
the AUCs to every digit). Resume and the collective helpers take torchrun launches of their own:
they are marked slow (--runslow).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import papermill.cli
import pytest
import torch

from fndkit import distributed
from fndkit.config import ConfigError
from fndkit.data.datasets import make_loader
from fndkit.evaluate import evaluate
from fndkit.rundir import RunFolder, StageError
from fndkit.cli import main
from fndkit.bench.chain import timed_chain
from fndkit.run import notebook_parameters, parse_value, stage_parameters
from fndkit.stages import training
from fndkit.train import build_model

PROBE = Path(__file__).resolve().parent / "distributed_probe.py"
LOSS_TOL, AUC_TOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_tiny_run_folder):
    """A tiny run folder with data and a one-epoch teacher."""
    run_dir = make_tiny_run_folder(tmp_path_factory.mktemp("dist") / "run")
    with one_thread():
        training.plan_stage("teacher", {**notebook_parameters("teacher"), "run_dir": str(run_dir), "epochs": 1,
                                        "snapshot_epochs": [], "device": "cpu"}).run(progress=False)
    return run_dir


class one_thread:
    """One torch thread, as each torchrun process has (OMP_NUM_THREADS=1): the same float sums."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def torchrun(log_dir: Path, root: Path, *args: str, nproc: int = 2) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(PROBE), str(log_dir), str(root), *args]
    # the processes import this checkout's fndkit (a script's folder, not the working directory, leads
    # sys.path: without this they would import whichever checkout the environment has installed)
    root = str(PROBE.parent.parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def writes(log_dir: Path, rank: int) -> list[str]:
    return json.loads((log_dir / f"writes.{rank}.json").read_text())


# ------------------------------------------------------------------------------------------ loader


@pytest.mark.parametrize("batch,world", [(32, 2), (30, 3), (8, 4)])
def test_sharded_loader_splits_the_single_process_batches(tiny, batch, world):
    ds = RunFolder(tiny).dataset()
    shards = [make_loader(ds, "train", batch, True, 7, drop_last=True, num_replicas=world, rank=r)
              for r in range(world)]
    for epoch in range(3):
        single = [b["outfits"] for b in make_loader(ds, "train", batch, True, 7 + epoch, drop_last=True)]
        for s in shards:
            s.sampler.set_epoch(epoch)
        parts = [[b["outfits"] for b in s] for s in shards]
        assert [len(p) for p in parts] == [len(single)] * world
        for k, whole in enumerate(single):
            # process r holds rows r, r + W, ... of the batch one process loads
            assert torch.equal(torch.stack([p[k] for p in parts], 1).reshape(-1), whole)


def test_batch_size_must_split_over_the_processes(tiny):
    ds = RunFolder(tiny).dataset()
    with pytest.raises(ValueError, match=r"batch_size=33 cannot be split over 2 processes.*multiple of 2"):
        make_loader(ds, "train", 33, True, 0, drop_last=True, num_replicas=2, rank=0)


# ------------------------------------------------------------------------------------------ one schema


@pytest.mark.parametrize("text", ["True", "False", "None", "3", "-2", "0.5", "1e-3", "nan", "erase,erase",
                                  "outputs/demo", "[1, 2]", ""])
def test_values_are_read_as_papermill_reads_them(text):
    expected = papermill.cli._resolve_type(text)
    got = parse_value(text)
    assert type(got) is type(expected)
    assert got == expected or (isinstance(got, float) and np.isnan(got) and np.isnan(expected))


def test_the_command_line_takes_the_notebook_parameters_and_no_others(tiny):
    params = stage_parameters("student", str(tiny), out_name="s1",
                              params=["alpha=1.5", "negatives=per_pair", "budget_epochs=None"],
                              yaml_params=["epochs: 3"])
    assert notebook_parameters("student").keys() == params.keys()
    assert (params["alpha"], params["negatives"], params["budget_epochs"], params["epochs"], params["out_name"],
            params["run_dir"]) == (1.5, "per_pair", None, 3, "s1", str(tiny))
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) lam .*03_student.*valid: .*alpha.*teacher_dir"):
        stage_parameters("student", str(tiny), params=["lam=0.2"])
    with pytest.raises(ConfigError, match="--out-name: --stage teacher .* has no out_name"):
        stage_parameters("teacher", str(tiny), out_name="t2")
    with pytest.raises(ConfigError, match="once, with --run-dir"):
        stage_parameters("teacher", str(tiny), params=["run_dir=/elsewhere"])
    with pytest.raises(ConfigError, match="must be key=value"):
        stage_parameters("teacher", str(tiny), params=["epochs"])


def test_bad_parameters_exit_with_a_clear_message(tiny, capsys):
    assert main(["train", "--run-dir", str(tiny), "--stage", "teacher", "-p", "dim=64"]) == 2
    assert "unknown parameter(s) dim for --stage teacher" in capsys.readouterr().err


@pytest.mark.parametrize("kind,extra,stage", [
    ("teacher", {}, "teacher"), ("student", {}, "student_fnd"),
    ("student", {"loss": "npair", "negatives": "per_pair"}, "student_npair-per_pair"),
    ("contrastive", {}, "contrastive"), ("contrastive", {"augmentations": "erase,erase", "lam": 0.5},
                                         "contrastive-erase-erase-lam0.5"),
    ("baseline", {}, "lpae-u")])
def test_plan_stage_is_what_the_notebook_trains(tiny, kind, extra, stage):
    """Every parameter of the notebook is used; the folder and config follow the notebook's rules."""
    plan = training.plan_stage(kind, {**notebook_parameters(kind), "run_dir": str(tiny), **extra})
    assert plan.stage == stage
    assert plan.cfg.batch_size == 32 and plan.cfg.seed == 0
    assert plan.cfg.loss == {"teacher": "npair", "baseline": "lpae"}.get(kind, extra.get("loss", "fnd"))
    assert plan.cfg.lam == {"contrastive": extra.get("lam", 0.2)}.get(kind, 0.0)


def test_contrastive_needs_a_positive_lam(tiny):
    with pytest.raises(ConfigError, match=r"lam=0 must be > 0 .*--stage student"):
        training.plan_stage("contrastive", {**notebook_parameters("contrastive"), "run_dir": str(tiny), "lam": 0})


# ------------------------------------------------------------------------------------------ one process


def test_one_process_helpers_change_nothing():
    x = torch.randn(3, 2, requires_grad=True)
    assert not distributed.is_active() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.gather_with_grad(x) is x and distributed.all_gather_rows(x) is x
    assert distributed.gather_interleaved(x) is x
    assert distributed.run_on_main(lambda a, b=0: a + b, 2, b=3) == 5
    assert distributed.sum_over_processes({"loss": 1.5}) == {"loss": 1.5}
    assert distributed.own_rows(4).tolist() == [0, 1, 2, 3]


def test_a_world_without_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(distributed.DistributedError, match="start the processes with torchrun"):
        distributed.init_from_env("cpu")


# ------------------------------------------------------------------------------------------ two processes


@pytest.mark.parametrize("stage,params,folder,keys", [
    # FND-CL: the FND teacher's signal, the contrastive term over the global batch, split scoring
    ("contrastive", ["augmentations=erase,erase"], "contrastive-erase-erase", ("loss_cl", "flag_precision")),
    # each pair's own negatives, cut down to each process's pairs
    pytest.param("student", ["negatives=per_pair"], "student_fnd-per_pair", ("flag_precision",),
                 marks=pytest.mark.slow)])
def test_two_processes_train_like_one_and_rank0_alone_writes(tiny, tmp_path, stage, params, folder, keys):
    """torchrun --nproc_per_node=2 -m fndkit train ... against python -m fndkit train ..."""
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(tiny, one)
    shutil.copytree(tiny, two)
    args = ["--stage", stage, *(x for p in params for x in ("-p", p)), "-p", "epochs=1", "-p", "device=cpu",
            "--no-progress"]
    with one_thread():
        assert main(["train", "--run-dir", str(one), *args]) == 0
    torchrun(tmp_path / "logs", two, "cli", "train", "--run-dir", str(two), *args)

    a, b = RunFolder(one), RunFolder(two)
    ma, mb = a.read_metrics(folder), b.read_metrics(folder)
    assert (ma["world_size"], mb["world_size"]) == (1, 2)
    ha, hb = a.read_history(folder)[0], b.read_history(folder)[0]
    for key in ("loss", "flagged_fraction", "val_auc", *keys):
        assert hb[key] == pytest.approx(ha[key], abs=LOSS_TOL), key
    for protocol in ("random", "hard"):
        assert mb["test"][protocol]["auc"] == pytest.approx(ma["test"][protocol]["auc"], abs=AUC_TOL)
        assert mb["test"][protocol]["n_users"] == ma["test"][protocol]["n_users"]
    # the same files, written by rank 0 alone
    names = [sorted(p.name for p in run.stage_dir(folder).iterdir()) for run in (a, b)]
    assert names[0] == names[1]
    assert writes(tmp_path / "logs", 1) == []
    written = {Path(p).name for p in writes(tmp_path / "logs", 0)}
    assert {"config.json", "checkpoint.pt", "last.pt", "history.json", "metrics.json",
            "per_user_auc.json"} <= written


@pytest.mark.slow
def test_a_stopped_run_resumes_under_torchrun(tiny, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(Path(tiny) / "data", run_dir / "data")
    torchrun(tmp_path / "logs", run_dir, "resume", str(run_dir))
    out = json.loads((tmp_path / "logs" / "resume.0.json").read_text())
    assert "last.pt" in out["stopped_files"] and "metrics.json" not in out["stopped_files"]
    assert [h["loss"] for h in out["history_resumed"]] == [h["loss"] for h in out["history_straight"]]
    for protocol in ("random", "hard"):
        assert out["resumed"]["test"][protocol]["auc"] == out["straight"]["test"][protocol]["auc"]
    assert writes(tmp_path / "logs", 1) == []


@pytest.mark.slow
def test_collectives_agree_with_one_process(tiny, tmp_path):
    torchrun(tmp_path / "logs", tmp_path, "collectives", str(tiny))
    outs = [json.loads((tmp_path / "logs" / f"collectives.{r}.json").read_text()) for r in range(2)]
    cfg = training.teacher_config(str(tiny), seed=0, device="cpu")
    torch.manual_seed(3)
    ds = RunFolder(tiny).dataset()
    reference = evaluate(build_model(cfg, ds), ds, split="test", device="cpu")
    for out in outs:
        assert out["all_gather_rows"] == [[0.0] * 3, [10.0] * 3, [11.0] * 3]
        assert out["interleaved_ok"] and out["gather_with_grad_ok"]
        assert out["sums"] == {"loss": 4.5, "pairs": 20}
        for protocol in ("random", "hard"):
            for key in ("auc", "ndcg_lpae", "ndcg_standard"):
                assert out["evaluate"][protocol][key] == pytest.approx(reference[protocol][key], abs=1e-6)
    assert outs[0]["run_on_main"] == "ZeroDivisionError"
    assert outs[1]["run_on_main"] == "DistributedError: rank 0 stopped with ZeroDivisionError: division by zero"


# ------------------------------------------------------------------------------------------ the timed chain


def test_the_timed_chain_records_every_stage(tmp_path):
    """What scripts/gpu_630.sh runs at polyvore630 scale, at tiny scale on the CPU."""
    report = tmp_path / "chain.json"
    with one_thread():
        record = timed_chain(tmp_path / "run", scale="tiny", epochs=1, max_steps_per_epoch=2, cold_repetitions=1,
                             device="cpu", report=report, progress=False)
    assert json.loads(report.read_text()) == json.loads(json.dumps(record))
    assert record["status"] == "finished" and record["bounds"]["max_steps_per_epoch"] == 2
    assert list(record["stages"]) == ["data", "autoencoder", "teacher", "student_fnd", "contrastive", "cold_start"]
    run = RunFolder(tmp_path / "run")
    for stage in ("teacher", "student_fnd", "contrastive"):
        timed, metrics = record["stages"][stage], run.read_metrics(stage)
        # 146 training positives: 4 batches of 32, 2 of them run
        assert (timed["steps_per_epoch"], timed["whole_epoch_steps"], timed["epochs_run"]) == (2, 4, 1)
        assert timed["test"]["hard"]["auc"] == metrics["test"]["hard"]["auc"]
        assert record["scoring"][stage]["rows"] == 704 and record["scoring"][stage]["auc"]["random"] == \
            pytest.approx(metrics["test"]["random"]["auc"], abs=1e-9)
    assert {r["model"] for r in record["stages"]["cold_start"]["rows"]} == {"teacher", "student_fnd", "contrastive"}
    with pytest.raises(StageError, match="needs a fresh run_dir"):
        timed_chain(tmp_path / "run", scale="tiny", device="cpu")


def test_the_timed_chain_is_the_demo_chain_within_its_bounds(tmp_path):
    from fndkit.plans.chain import default_chain
    from fndkit.bench.chain import TIMED_STEPS, timed_chain_jobs

    demo = {j.label: j for j in default_chain("tiny", seed=3, run_dir=tmp_path)}
    jobs = timed_chain_jobs(tmp_path, "tiny", seed=3, epochs=1, max_steps_per_epoch=2, autoencoder_epochs=4,
                            cold_repetitions=2, device="cpu")
    assert [j.label for j in jobs] == list(TIMED_STEPS)
    bounds = {"data": set(), "autoencoder": {"epochs", "device"}, "cold_start": {"repetitions", "device"}}
    for job in jobs:
        mine, theirs = job.params.to_dict(), demo[job.label].params.to_dict()
        changed = {k for k in mine if mine[k] != theirs[k]}
        assert changed <= bounds.get(job.kind, {"epochs", "max_steps_per_epoch", "device"}), (job.label, changed)
        assert mine["seed"] == 3
    assert (jobs[1].params.epochs, jobs[2].params.max_steps_per_epoch, jobs[-1].params.repetitions) == (4, 2, 2)
