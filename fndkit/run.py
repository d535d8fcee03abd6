"""One training stage, in one process or several (torchrun), and the timed chain: what the
command line's ``train``, ``params`` and ``timed-chain`` verbs call (:mod:`fndkit.cli`).

    python -m fndkit train --run-dir R --stage teacher|student|contrastive|baseline \\
        [--out-name NAME] [-p key=value ...] [-y 'key: [yaml, value]']
    torchrun --nproc_per_node=4 -m fndkit train --run-dir R --stage teacher -p batch_size=128
    python -m fndkit params --stage student        # the parameters and their defaults
    python -m fndkit timed-chain --run-dir R --scale polyvore630 --report out.json   # see timed_chain

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
from .config import ConfigError, DataConfig, check_int
from .data.schema import DatasetError
from .evaluate import evaluate, shared_item_cache
from .models.backbones import images_to_tensor
from .repro import resolve_device, run_metadata, seed_everything, synchronize
from .rundir import RunFolder, StageError
from .plans.chain import default_chain
from .plans.execute import KINDS, Job, JobError, JobInterrupted, Local, run_plan
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


def describe_parameters(kind: str) -> str:
    """``# kind: notebooks/NN.ipynb`` and one ``name = value`` line per parameter (``params`` verb)."""
    lines = [f"{name} = {value!r}" for name, value in notebook_parameters(kind).items()]
    return "\n".join([f"# {kind}: notebooks/{PARAMS[kind].notebook}.ipynb", *lines])


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


def _measured(fn, *args, **kwargs) -> tuple[Any, dict]:
    """``fn(...)`` and what it cost: wall seconds, peak CUDA memory (allocated / reserved, GiB)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    synchronize()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    synchronize()
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
        synchronize()
        t0 = time.perf_counter()
        for ids in batches:
            host = torch.from_numpy(np.ascontiguousarray(dataset.images.get(ids)))
            if pin:
                host = host.pin_memory()
            images_to_tensor(host.to(device, non_blocking=pin), None, device)
        synchronize()
        out[name] = round(1e3 * (time.perf_counter() - t0) / steps, 3)
    return out


def _test_table(metrics: dict) -> dict:
    return {p: {k: m[k] for k in ("auc", "ndcg_lpae", "ndcg_standard", "n_users") if k in m}
            for p, m in metrics.get("test", {}).items()}


TIMED_STEPS = ("00_data", "01_autoencoder", "02_teacher", "03_student_fnd", "04_contrastive", "05_cold_start")


def timed_chain_jobs(run_dir: str | os.PathLike, scale: str = "polyvore630", seed: int = 0, epochs: int = 2,
                     max_steps_per_epoch: int | None = 300, autoencoder_epochs: int = 1, cold_repetitions: int = 3,
                     device: str = "auto") -> list[Job]:
    """The timed chain's jobs: :func:`fndkit.plans.chain.default_chain`'s data, autoencoder, teacher,
    FND student, FND-CL and cold start (``TIMED_STEPS``), within the bounds given."""
    chain = {j.label: j for j in default_chain(scale, seed=seed, run_dir=run_dir)}
    jobs = [chain["00_data"], chain["01_autoencoder"].with_params(epochs=autoencoder_epochs, device=device)]
    for label in TIMED_STEPS[2:5]:
        jobs.append(chain[label].with_params(epochs=epochs, max_steps_per_epoch=max_steps_per_epoch, device=device))
    # cold start ranks with its notebook's models that are present: the three trained here (a
    # student's folder name needs the data's paper defaults, so it is not known before 00_data ran)
    return jobs + [chain["05_cold_start"].with_params(repetitions=cold_repetitions, device=device)]


def _check_bounds(scale: str, seed: int, epochs: int, max_steps_per_epoch: int | None, autoencoder_epochs: int,
                  cold_repetitions: int) -> None:
    """Every bound refused before anything is built (a wrong one would fail minutes into the chain)."""
    DataConfig(scale=scale, seed=seed)
    check_int("epochs", epochs, 1)
    if max_steps_per_epoch is not None:
        check_int("max_steps_per_epoch", max_steps_per_epoch, 1, ", or None for whole epochs")
    check_int("autoencoder_epochs", autoencoder_epochs, 1)
    check_int("cold_repetitions", cold_repetitions, 1)


def _stage_record(run: RunFolder, job: Job, metrics: dict, n_train: int, max_steps_per_epoch: int | None) -> dict:
    """What the timed chain keeps of one finished stage (besides its cost)."""
    if job.kind == "data":
        ds = run.dataset()
        return {"stats": ds.stats(), "candidates_rows": {k: len(c) for k, c in ds.candidates.items()}}
    if job.kind == "autoencoder":
        return {"reconstruction_mse_held_out": metrics["reconstruction_mse_held_out"]}
    if job.kind == "cold_start":
        keep = ("model", "protocol", "strategy", "n_interactions", "auc_mean", "ndcg_lpae_mean")
        return {"rows": [{k: r[k] for k in keep if k in r} for r in metrics["rows"]
                         if r.get("n_interactions") in (1, 5)]}
    cfg = run.read_config(job.stage)["train"]
    whole = n_train // cfg["batch_size"]
    steps = min(whole, max_steps_per_epoch or n_train)
    per_step = float(np.mean([h["seconds"] for h in run.read_history(job.stage)])) / max(steps, 1)
    return {"backbone": cfg["backbone"], "loss": cfg["loss"], "lam": cfg["lam"], "batch_size": cfg["batch_size"],
            "epochs_run": metrics["epochs_run"], "steps_per_epoch": steps, "epoch_seconds": metrics["epoch_seconds"],
            "seconds_per_step": round(per_step, 5), "whole_epoch_steps": whole,
            "whole_epoch_seconds_estimate": round(per_step * whole, 1), "best_epoch": metrics["best_epoch"],
            "best_val_auc": metrics["best_val_auc"], "test": _test_table(metrics),
            **{k: metrics[k] for k in ("flagged_fraction", "flag_precision", "flag_recall") if k in metrics}}


def _chain_record(scale: str, seed: int, run: RunFolder, device: str, bounds: dict, command: str | None) -> dict:
    """The timed chain's record before any stage: what runs, where, on what machine."""
    record: dict[str, Any] = {
        "scale": scale, "seed": seed, "run_dir": str(run.root), "device": device, "bounds": bounds,
        "command": command or " ".join([os.path.basename(sys.executable), "-m", "fndkit", *sys.argv[1:]]),
        "machine": run_metadata(device), "stages": {}, "scoring": {}, "status": "running"}
    if torch.cuda.is_available():
        record["machine"]["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    return record


def _scoring_record(run: RunFolder, ds, name: str, device: str) -> dict:
    """The time to score every user's test candidates with stage ``name``'s model (Table 5's job)."""
    model, _ = run.load_model(name, device=device)
    keys = [k for k in ds.candidates if k.startswith("test/")]
    items = np.concatenate([ds.candidates[k].items for k in keys])
    _, cache_cost = _measured(shared_item_cache, model, ds, items, device)
    out, cost = _measured(evaluate, model, ds, split="test", device=device)
    return {**cost, "what": "every user's test candidates, both protocols, item features cached (evaluate)",
            "rows": sum(len(ds.candidates[k]) for k in keys), "unique_items": int(np.unique(items[items >= 0]).size),
            "item_encoding_wall_s": cache_cost["wall_s"], "auc": {p: m["auc"] for p, m in out.items()}}


def _cost_since(t0: float) -> dict:
    """Wall seconds since ``t0`` and the peak CUDA memory since the last reset (GiB); resets it."""
    synchronize()
    cost = {"wall_s": round(time.perf_counter() - t0, 2)}
    if torch.cuda.is_available():
        cost["peak_gpu_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
        cost["peak_gpu_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2 ** 30, 3)
        torch.cuda.reset_peak_memory_stats()
    return cost


def _score_and_close(record: dict, run: RunFolder, jobs: list, device: str, seed: int, t_start: float,
                     save) -> None:
    """After the stages: each trained model's scoring time (warm), the image transfer, the totals."""
    ds = run.dataset()
    for name in [j.stage for j in jobs if KINDS[j.kind].trains]:
        record["scoring"][name] = _scoring_record(run, ds, name, device)
        save()
    record["image_transfer"] = transfer_timing(ds, device, seed=seed)
    record["wall_s"] = round(time.perf_counter() - t_start, 1)
    record["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    record["status"] = "finished"
    save()


def timed_chain(run_dir: str | os.PathLike, scale: str = "polyvore630", seed: int = 0, epochs: int = 2,
                max_steps_per_epoch: int | None = 300, autoencoder_epochs: int = 1, cold_repetitions: int = 3,
                device: str = "auto", report: str | os.PathLike | None = None, progress: bool = True,
                command: str | None = None) -> dict:
    """The chain at ``scale`` — data, autoencoder, teacher, FND student, FND-CL, cold start
    (:func:`timed_chain_jobs`: the demo chain's jobs, one seed) — run by the one executor
    (:func:`fndkit.plans.execute.run_plan`, in this process) and timed stage by stage.

    Bounded so that it fits a time budget: every training stage runs ``epochs`` epochs of at most
    ``max_steps_per_epoch`` steps (None: whole epochs), the autoencoder ``autoencoder_epochs``,
    cold start ``cold_repetitions`` repetitions. Records per stage the wall time and peak CUDA
    memory; per training stage seconds per epoch and per step, the steps of a whole epoch and the
    seconds one would take at the measured step rate (labelled an estimate), and the test AUC /
    NDCG; and the time to score every user's test candidates with each model (the paper's Table 5
    job), once more after the stages, warm. The record is written to ``report`` after every stage,
    so a run stopped by a time limit keeps what it measured. ``run_dir`` must be new or empty:
    reused stages would time nothing. ``command``: the command line the record names.
    """
    _check_bounds(scale, seed, epochs, max_steps_per_epoch, autoencoder_epochs, cold_repetitions)
    run = RunFolder(run_dir)
    if run.root.exists() and any(run.root.iterdir()):
        raise StageError(f"{run.root} is not empty; the timed chain needs a fresh run_dir (reused stages "
                         f"would time nothing): delete it or pass another")
    device = resolve_device(device)
    jobs = timed_chain_jobs(run.root, scale, seed, epochs, max_steps_per_epoch, autoencoder_epochs,
                            cold_repetitions, device)
    bounds = {"epochs": epochs, "max_steps_per_epoch": max_steps_per_epoch, "autoencoder_epochs": autoencoder_epochs,
              "cold_start_repetitions": cold_repetitions}
    record = _chain_record(scale, seed, run, device, bounds, command)

    def save() -> None:
        if report is not None:
            write_json(report, record)

    t_start = clock = time.perf_counter()
    n_train = 0

    def done(job: Job, metrics: dict, _rec: dict) -> None:
        nonlocal clock, n_train
        cost, clock = _cost_since(clock), time.perf_counter()
        if job.kind == "data":
            n_train = int(run.dataset().outfits_of("train").size)
        record["stages"][job.stage] = {**cost, **_stage_record(run, job, metrics, n_train, max_steps_per_epoch)}
        save()

    try:
        _cost_since(clock)  # the peak memory counts from here
        run_plan(jobs, via="process", dispatch=Local(1), progress=progress, on_done=done, scale=scale)
        _score_and_close(record, run, jobs, device, seed, t_start, save)
    except (KeyboardInterrupt, JobInterrupted):  # a time limit (gpu_630.sh sends SIGINT): keep what was measured
        record["status"] = f"stopped after {time.perf_counter() - t_start:.0f} s"
        save()
        raise KeyboardInterrupt from None
    except JobError as exc:
        record["status"] = f"failed: {str(exc).splitlines()[0]}"
        save()
        raise
    return record
