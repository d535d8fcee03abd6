"""Started by tests/test_distributed.py under torchrun (never collected by pytest).

    torchrun --nproc_per_node=2 tests/distributed_probe.py LOG_DIR ROOT cli train --run-dir ...
    torchrun --nproc_per_node=2 tests/distributed_probe.py LOG_DIR ROOT resume RUN_DIR
    torchrun --nproc_per_node=2 tests/distributed_probe.py LOG_DIR ROOT collectives RUN_DIR

Every process records the files and folders it creates or renames into place under ROOT
(``os.replace``, which every atomic write ends with, and ``os.mkdir``) in LOG_DIR/writes.<rank>.json,
so the test can tell which processes wrote the run folder. ``cli`` runs ``python -m fndkit``'s
``main`` (:func:`fndkit.cli.main`); ``resume`` trains a teacher straight through, then again with a
stop after the first epoch and a resume; ``collectives`` checks the helpers of :mod:`fndkit.distributed` and the split
evaluation against one-process references (results in LOG_DIR/collectives.<rank>.json).
"""

import json
import os
import sys
from pathlib import Path

import torch

LOG_DIR, ROOT, MODE, *ARGS = sys.argv[1:]
RANK = int(os.environ["RANK"])
WRITES: list[str] = []
_replace, _mkdir = os.replace, os.mkdir


def _note(path) -> None:
    path = os.path.abspath(os.fspath(path))
    if path.startswith(os.path.abspath(ROOT)):
        WRITES.append(path)


def _recording_replace(src, dst, *args, **kwargs):
    _note(dst)
    return _replace(src, dst, *args, **kwargs)


def _recording_mkdir(path, *args, **kwargs):
    _note(path)
    return _mkdir(path, *args, **kwargs)


os.replace, os.mkdir = _recording_replace, _recording_mkdir

from fndkit import distributed  # noqa: E402  (after the recorders are in place)
from fndkit.evaluate import evaluate  # noqa: E402
from fndkit.cli import main  # noqa: E402
from fndkit.rundir import RunFolder  # noqa: E402
from fndkit.stages import training  # noqa: E402
from fndkit.train import Callback, build_model  # noqa: E402


class Stop(Exception):
    pass


class StopAfterFirstEpoch(Callback):
    """Stop (as a kill would) in the second epoch, once the first one is committed."""

    def on_batch_end(self, t):
        if t.state.epoch >= 1:
            raise Stop()


def resume(run_dir: str) -> None:
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    params = {"run_dir": run_dir, "seed": 0, "device": "cpu", "epochs": 2, "snapshot_epochs": []}
    straight = training.plan_stage("teacher", params)
    out = {"straight": straight.run(progress=False)}
    stopped = training.StagePlan(run_dir, "teacher_stopped", straight.cfg, straight.kwargs)
    try:
        stopped.run(progress=False, callbacks=[StopAfterFirstEpoch()])
    except Stop:
        pass
    out["stopped_files"] = sorted(p.name for p in RunFolder(run_dir).stage_dir("teacher_stopped").iterdir())
    out["resumed"] = stopped.run(progress=False)
    out["history_straight"] = RunFolder(run_dir).read_history("teacher")
    out["history_resumed"] = RunFolder(run_dir).read_history("teacher_stopped")
    (Path(LOG_DIR) / f"resume.{RANK}.json").write_text(json.dumps(out, default=str))
    distributed.shutdown()


def collectives(run_dir: str) -> None:
    """Each helper against what one process computes."""
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    rank, world = distributed.rank(), distributed.world_size()
    out = {}
    # rows of different counts, gathered in rank order
    mine = torch.arange(rank + 1, dtype=torch.float32)[:, None].repeat(1, 3) + 10 * rank
    out["all_gather_rows"] = distributed.all_gather_rows(mine).tolist()
    # the global batch in one process's order: process r holds rows r::W
    full = torch.arange(12).reshape(6, 2)
    out["interleaved_ok"] = bool(torch.equal(distributed.gather_interleaved(full[rank::world]), full))
    # gather_with_grad + DDP-style averaging gives the gradient of one loss over all rows
    torch.manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64)
    weight = torch.randn(4, 4, dtype=torch.float64)

    def loss_of(rows):
        z = rows @ weight
        return torch.logsumexp(z @ z.T, dim=1).mean()

    xs = x.clone().requires_grad_()
    (grad_full,) = torch.autograd.grad(loss_of(xs), xs)
    part = x[rank * 3:(rank + 1) * 3].clone().requires_grad_()
    (grad_part,) = torch.autograd.grad(loss_of(distributed.gather_with_grad(part)), part)
    out["gather_with_grad_ok"] = bool(torch.allclose(grad_part / world, grad_full[rank * 3:(rank + 1) * 3],
                                                     atol=1e-12))
    # rank 0's failure reaches every process
    try:
        distributed.run_on_main(lambda: 1 / 0)
        out["run_on_main"] = "no error"
    except ZeroDivisionError:
        out["run_on_main"] = "ZeroDivisionError"
    except distributed.DistributedError as exc:
        out["run_on_main"] = f"DistributedError: {exc}"
    # split evaluation gives the one-process metrics
    run = RunFolder(run_dir)
    ds = run.dataset()
    cfg = training.teacher_config(run_dir, seed=0, device="cpu")
    torch.manual_seed(3)
    model = build_model(cfg, ds)
    out["evaluate"] = evaluate(model, ds, split="test", device="cpu")
    out["sums"] = distributed.sum_over_processes({"loss": 1.5 * (rank + 1), "pairs": 10})
    (Path(LOG_DIR) / f"collectives.{rank}.json").write_text(json.dumps(out))
    distributed.shutdown()


try:
    if MODE == "cli":
        code = main(ARGS)
    elif MODE == "resume":
        resume(*ARGS)
        code = 0
    elif MODE == "collectives":
        collectives(*ARGS)
        code = 0
    else:
        raise SystemExit(f"unknown mode {MODE!r}")
finally:
    (Path(LOG_DIR) / f"writes.{RANK}.json").write_text(json.dumps(WRITES))
sys.exit(code)
