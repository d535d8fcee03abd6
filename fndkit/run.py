"""Training stages from the command line, in one process or several (torchrun), and the timed chain.

    python -m fndkit.run train --run-dir R --stage teacher|student|contrastive|baseline \\
        [--out-name NAME] [-p key=value ...] [-y 'key: [yaml, value]']
    torchrun --nproc_per_node=4 -m fndkit.run train --run-dir R --stage teacher -p batch_size=128
    python -m fndkit.run params --stage student        # the parameters and their defaults
    python -m fndkit.run chain --run-dir R --scale polyvore630 --report out.json   # timed, see timed_chain

**One parameter schema.** ``train --stage KIND`` takes exactly the parameters of the notebook
that trains that stage (02_teacher, 03_student, 04_contrastive, 07_baselines): the stage's
``Params`` dataclass (:mod:`fndkit.stages.training`), which *is* that notebook's ``parameters``
cell (a hygiene test holds them equal); a name it lacks is refused with the list of valid ones,
and ``-p key=value`` values are read as papermill's ``-p`` reads them (``True``, ``False``,
``None``, an int, a float, else a string; ``-y`` takes YAML for lists). Then it calls what the
notebook calls (:func:`fndkit.stages.training.execute`), so one process gives the notebook's
metrics for the same seed.

**Several processes.** Under torchrun each process joins the process group
(:func:`fndkit.distributed.init_from_env`: NCCL on GPUs, gloo on CPU) and trains its share of
every batch; ``batch_size`` is the global batch (see :mod:`fndkit.distributed`). Only rank 0
writes the run folder and prints.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch
import yaml

from . import distributed
from .artifacts import write_json
from .config import ConfigError, DataConfig
from .data.schema import DatasetError
from .evaluate import evaluate, shared_item_cache
from .models.backbones import images_to_tensor
from .repro import resolve_device, run_metadata, seed_everything
from .rundir import RunFolder, StageError
from .stages import autoencoder as autoencoder_stage
from .stages import cold_start as cold_start_stage
from .stages import data as data_stage
from .stages.training import PARAMS, metrics_line

# Errors whose message says what to do: printed without a traceback.
USER_ERRORS = (ConfigError, StageError, DatasetError, distributed.DistributedError, ValueError, FileNotFoundError)


# ---------------------------------------------------------------------------------------------
# the parameter schema: the notebook's parameters cell


def parse_value(text: str) -> Any:
    """A ``-p`` value as papermill's command line reads it: True / False / None, an int, a float,
    else the string itself."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def notebook_parameters(kind: str) -> dict[str, Any]:
    """Names and default values of the ``parameters`` cell of the notebook behind stage ``kind``
    (its ``Params`` dataclass: no notebook is read, so this works for an installed package)."""
    if kind not in PARAMS:
        raise ConfigError(f"--stage {kind!r} is unknown; choose one of {', '.join(PARAMS)}")
    return PARAMS[kind].defaults()


def stage_parameters(kind: str, run_dir: str, out_name: str | None = None, params: Sequence[str] = (),
                     yaml_params: Sequence[str] = ()) -> dict[str, Any]:
    """The notebook's parameters with ``run_dir``, ``out_name``, ``-p key=value`` and ``-y YAML``
    applied; unknown names refused, naming the valid ones."""
    defaults = notebook_parameters(kind)
    where = f"--stage {kind} (notebooks/{PARAMS[kind].notebook}.ipynb)"
    given: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-p {item!r} must be key=value, e.g. -p epochs=3")
        given[key.strip()] = parse_value(value)
    for text in yaml_params:
        loaded = yaml.safe_load(text)
        if not isinstance(loaded, dict):
            raise ConfigError(f"-y {text!r} must be a YAML mapping, e.g. -y 'snapshot_epochs: [1, 2]'")
        given.update({str(k): v for k, v in loaded.items()})
    if "run_dir" in given:
        raise ConfigError("give the run folder once, with --run-dir (not -p run_dir=...)")
    if out_name is not None:
        if "out_name" not in defaults:
            raise ConfigError(f"--out-name: {where} has no out_name parameter (its folder is always "
                              f"{kind!r})")
        given["out_name"] = out_name
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {where}; valid: "
                          f"{', '.join(sorted(defaults))}")
    return {**defaults, **given, "run_dir": run_dir}


def train(kind: str, params: dict[str, Any], progress: bool = True) -> dict:
    """What the notebook does with ``params``, in this process (or in each torchrun process)."""
    distributed.init_from_env(params.get("device", "auto"))
    try:
        typed = PARAMS[kind].from_dict(params)
        seed_everything(typed.seed)
        plan = typed.plan()
        plan.check()  # a finished run with another config is refused before anything is announced
        if distributed.is_main():
            print(f"training {plan.stage} in {RunFolder(plan.run_dir).root} with {distributed.world_size()} "
                  f"process(es), global batch {plan.cfg.batch_size}")
        metrics = plan.run(progress=progress and distributed.is_main())
        if distributed.is_main():
            print(metrics_line(metrics))
        return metrics
    finally:
        distributed.shutdown()


# ---------------------------------------------------------------------------------------------
# the whole chain, timed (the GPU benchmark: scripts/gpu_630.sh)


def _cuda_sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _measured(fn, *args, **kwargs) -> tuple[Any, dict]:
    """``fn(...)`` and what it cost: wall seconds, peak CUDA memory (allocated / reserved, GiB)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    _cuda_sync()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    _cuda_sync()
    cost = {"wall_s": round(time.perf_counter() - t0, 2)}
    if torch.cuda.is_available():
        cost["peak_gpu_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
        cost["peak_gpu_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2 ** 30, 3)
    return out, cost


def transfer_timing(dataset, device: str, steps: int = 20, items_per_step: int = 190, seed: int = 0) -> dict:
    """Milliseconds per training step to gather a step's item images (memory-mapped uint8) and bring
    them to ``device`` as the backbone's input: pageable (what training does) against pinned host
    memory. On CUDA only: it says whether pinning (and loader workers filling pinned buffers) would pay."""
    if not str(device).startswith("cuda"):
        return {}
    rng = np.random.default_rng(seed)
    batches = [np.unique(rng.integers(0, dataset.n_items, items_per_step)) for _ in range(steps)]
    out = {"steps": steps, "items_per_step": items_per_step, "image_size": dataset.image_size}
    for name, pin in (("pageable_ms", False), ("pinned_ms", True)):
        _cuda_sync()
        t0 = time.perf_counter()
        for ids in batches:
            host = torch.from_numpy(np.ascontiguousarray(dataset.images.get(ids)))
            if pin:
                host = host.pin_memory()
            images_to_tensor(host.to(device, non_blocking=pin), None, device)
        _cuda_sync()
        out[name] = round(1e3 * (time.perf_counter() - t0) / steps, 3)
    return out


def _test_table(metrics: dict) -> dict:
    return {p: {k: m[k] for k in ("auc", "ndcg_lpae", "ndcg_standard", "n_users") if k in m}
            for p, m in metrics.get("test", {}).items()}


def timed_chain(run_dir: str | os.PathLike, scale: str = "polyvore630", seed: int = 0, epochs: int = 2,
                max_steps_per_epoch: int | None = 300, autoencoder_epochs: int = 1, cold_repetitions: int = 3,
                device: str = "auto", report: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """The chain at ``scale`` — data, autoencoder, teacher, FND student, FND-CL, cold start — through
    the notebooks' own stage calls (notebook defaults, one seed), timed stage by stage.

    Bounded so that it fits a time budget: every training stage runs ``epochs`` epochs of at most
    ``max_steps_per_epoch`` steps (None: whole epochs), the autoencoder ``autoencoder_epochs``,
    cold start ``cold_repetitions`` repetitions. Records per stage the wall time and peak CUDA
    memory; per training stage seconds per epoch and per step, the steps of a whole epoch and the
    seconds one would take at the measured step rate (labelled an estimate), and the test AUC /
    NDCG; and the time to score every user's test candidates with each model (the paper's Table 5
    job), once more after the stages, warm. The record is written to ``report`` after every stage,
    so a run stopped by a time limit keeps what it measured. ``run_dir`` must be new or empty:
    reused stages would time nothing.
    """
    run = RunFolder(run_dir)
    if run.root.exists() and any(run.root.iterdir()):
        raise StageError(f"{run.root} is not empty; the timed chain needs a fresh run_dir (reused stages "
                         f"would time nothing): delete it or pass another")
    device = resolve_device(device)
    record: dict[str, Any] = {
        "scale": scale, "seed": seed, "run_dir": str(run.root), "device": device,
        "bounds": {"epochs": epochs, "max_steps_per_epoch": max_steps_per_epoch,
                   "autoencoder_epochs": autoencoder_epochs, "cold_start_repetitions": cold_repetitions},
        "command": " ".join([os.path.basename(sys.executable), "-m", "fndkit", "timed-chain", *sys.argv[2:]]),
        "machine": run_metadata(device), "stages": {}, "scoring": {}, "status": "running"}
    if torch.cuda.is_available():
        record["machine"]["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)

    def save() -> None:
        if report is not None:
            write_json(report, record)

    t_start = time.perf_counter()
    try:
        seed_everything(seed)
        ds, cost = _measured(data_stage.run, run, DataConfig(scale=scale, seed=seed))
        stats = ds.stats()
        record["stages"]["data"] = {**cost, "stats": stats,
                                    "candidates_rows": {k: len(c) for k, c in ds.candidates.items()}}
        save()
        ae, cost = _measured(autoencoder_stage.run, run, epochs=autoencoder_epochs, seed=seed, device=device,
                             progress=progress)
        record["stages"]["autoencoder"] = {**cost, "reconstruction_mse_held_out": ae["reconstruction_mse_held_out"]}
        save()
        n_train = int(ds.outfits_of("train").size)
        trained = {}
        for kind, extra in (("teacher", {}), ("student", {"loss": "fnd"}), ("contrastive", {})):
            params = PARAMS[kind](run_dir=str(run.root), seed=seed, device=device, epochs=epochs,
                                  max_steps_per_epoch=max_steps_per_epoch, **extra)
            seed_everything(seed)
            plan = params.plan()
            metrics, cost = _measured(plan.run, progress=progress)
            history = run.read_history(plan.stage)
            steps = min(n_train // plan.cfg.batch_size, max_steps_per_epoch or n_train)
            per_step = float(np.mean([h["seconds"] for h in history])) / max(steps, 1)
            record["stages"][plan.stage] = {
                **cost, "backbone": plan.cfg.backbone, "loss": plan.cfg.loss, "lam": plan.cfg.lam,
                "batch_size": plan.cfg.batch_size, "epochs_run": metrics["epochs_run"], "steps_per_epoch": steps,
                "epoch_seconds": metrics["epoch_seconds"], "seconds_per_step": round(per_step, 5),
                "whole_epoch_steps": n_train // plan.cfg.batch_size,
                "whole_epoch_seconds_estimate": round(per_step * (n_train // plan.cfg.batch_size), 1),
                "best_epoch": metrics["best_epoch"], "best_val_auc": metrics["best_val_auc"],
                "test": _test_table(metrics),
                **{k: metrics[k] for k in ("flagged_fraction", "flag_precision", "flag_recall") if k in metrics}}
            trained[plan.stage] = plan.stage
            save()
        cold, cost = _measured(cold_start_stage.run, run, models=list(trained), repetitions=cold_repetitions,
                               seed=seed, device=device, progress=progress)
        keep = ("model", "protocol", "strategy", "n_interactions", "auc_mean", "ndcg_lpae_mean")
        record["stages"]["cold_start"] = {**cost, "rows": [{k: r[k] for k in keep if k in r} for r in cold["rows"]
                                                           if r.get("n_interactions") in (1, 5)]}
        save()
        for name in trained:
            model, _ = run.load_model(name, device=device)
            keys = [k for k in ds.candidates if k.startswith("test/")]
            rows = sum(len(ds.candidates[k]) for k in keys)
            items = np.concatenate([ds.candidates[k].items for k in keys])
            _, cache_cost = _measured(shared_item_cache, model, ds, items, device)
            out, cost = _measured(evaluate, model, ds, split="test", device=device)
            record["scoring"][name] = {**cost, "what": "every user's test candidates, both protocols, item "
                                       "features cached (evaluate)", "rows": rows,
                                       "unique_items": int(np.unique(items[items >= 0]).size),
                                       "item_encoding_wall_s": cache_cost["wall_s"],
                                       "auc": {p: m["auc"] for p, m in out.items()}}
            save()
        record["image_transfer"] = transfer_timing(ds, device, seed=seed)
        record["wall_s"] = round(time.perf_counter() - t_start, 1)
        record["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
        record["status"] = "finished"
        save()
    except KeyboardInterrupt:  # a time limit (scripts/gpu_630.sh sends SIGINT): keep what was measured
        record["status"] = f"stopped after {time.perf_counter() - t_start:.0f} s"
        save()
        raise
    return record


# ---------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fndkit.run", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train one stage as its notebook does (torchrun: several processes)")
    tr.add_argument("--run-dir", required=True, help="the run folder (what the notebook calls run_dir)")
    tr.add_argument("--stage", required=True, choices=sorted(PARAMS))
    tr.add_argument("--out-name", default=None, help="the stage folder (the notebook's out_name)")
    tr.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a notebook parameter, read as papermill's -p reads it")
    tr.add_argument("-y", "--yaml", action="append", default=[], metavar="YAML",
                    help="notebook parameters as a YAML mapping (for lists)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    pa = sub.add_parser("params", help="the parameters of a stage and their defaults")
    pa.add_argument("--stage", required=True, choices=sorted(PARAMS))
    ch = sub.add_parser("chain", help="the whole chain at one scale, timed stage by stage (JSON)")
    ch.add_argument("--run-dir", required=True, help="a new or empty folder")
    ch.add_argument("--scale", default="polyvore630")
    ch.add_argument("--seed", type=int, default=0)
    ch.add_argument("--epochs", type=int, default=2)
    ch.add_argument("--max-steps-per-epoch", type=int, default=300, help="0: whole epochs")
    ch.add_argument("--autoencoder-epochs", type=int, default=1)
    ch.add_argument("--cold-repetitions", type=int, default=3)
    ch.add_argument("--device", default="auto")
    ch.add_argument("--report", required=True, help="where the JSON record goes")
    ch.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "params":
            print(f"# {args.stage}: notebooks/{PARAMS[args.stage].notebook}.ipynb")
            for name, value in notebook_parameters(args.stage).items():
                print(f"{name} = {value!r}")
        elif args.command == "train":
            params = stage_parameters(args.stage, args.run_dir, args.out_name, args.param, args.yaml)
            train(args.stage, params, progress=not args.no_progress)
        else:
            record = timed_chain(args.run_dir, scale=args.scale, seed=args.seed, epochs=args.epochs,
                                 max_steps_per_epoch=args.max_steps_per_epoch or None,
                                 autoencoder_epochs=args.autoencoder_epochs, cold_repetitions=args.cold_repetitions,
                                 device=args.device, report=args.report, progress=not args.no_progress)
            print(f"chain finished in {record['wall_s']} s; record in {args.report}")
    except USER_ERRORS as exc:
        print(f"fndkit.run: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
