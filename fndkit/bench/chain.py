"""The whole chain at one scale, timed stage by stage (the GPU benchmark: scripts/gpu_630.sh).

    python -m fndkit timed-chain --run-dir R --scale polyvore630 --report out.json

The demo chain's data, autoencoder, teacher, FND student, FND-CL and cold start as one plan of the
executor (:func:`fndkit.plans.execute.run_plan`, in this process), within bounds that fit a time
budget; see :func:`timed_chain`.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

import numpy as np
import torch

from ..artifacts import write_json
from ..config import DataConfig, check_int
from ..evaluate import evaluate, shared_item_cache
from ..models.backbones import images_to_tensor
from ..plans.chain import default_chain
from ..plans.execute import KINDS, Job, JobError, JobInterrupted, Local, run_plan
from ..repro import resolve_device, run_metadata
from ..rundir import RunFolder, StageError
from .clock import Clock, cost_since, measured


def transfer_timing(dataset, device: str, steps: int = 20, items_per_step: int = 190, seed: int = 0) -> dict:
    """Milliseconds per training step to gather a step's item images (memory-mapped uint8) and bring
    them to ``device`` as the backbone's input: pageable (what training does) against pinned host
    memory. On CUDA only: it says whether pinning (and loader workers filling pinned buffers) would pay."""
    if not str(device).startswith("cuda"):
        return {}
    rng = np.random.default_rng(seed)
    batches = [np.unique(rng.integers(0, dataset.n_items, items_per_step)) for _ in range(steps)]
    out = {"steps": steps, "items_per_step": items_per_step, "image_size": dataset.image_size}
    clock = Clock(device)
    for name, pin in (("pageable_ms", False), ("pinned_ms", True)):
        t0 = clock.now()
        for ids in batches:
            host = torch.from_numpy(np.ascontiguousarray(dataset.images.get(ids)))
            if pin:
                host = host.pin_memory()
            images_to_tensor(host.to(device, non_blocking=pin), None, device)
        out[name] = round(1e3 * (clock.now() - t0) / steps, 3)
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
    _, cache_cost = measured(shared_item_cache, model, ds, items, device)
    out, cost = measured(evaluate, model, ds, split="test", device=device)
    return {**cost, "what": "every user's test candidates, both protocols, item features cached (evaluate)",
            "rows": sum(len(ds.candidates[k]) for k in keys), "unique_items": int(np.unique(items[items >= 0]).size),
            "item_encoding_wall_s": cache_cost["wall_s"], "auc": {p: m["auc"] for p, m in out.items()}}


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

    t_start = clock = Clock().now()
    n_train = 0

    def done(job: Job, metrics: dict, _rec: dict) -> None:
        nonlocal clock, n_train
        cost = cost_since(clock)
        clock = Clock().now()
        if job.kind == "data":
            n_train = int(run.dataset().outfits_of("train").size)
        record["stages"][job.stage] = {**cost, **_stage_record(run, job, metrics, n_train, max_steps_per_epoch)}
        save()

    try:
        cost_since(clock)  # the peak memory counts from here
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
