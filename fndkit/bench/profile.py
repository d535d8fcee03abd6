"""What scoring and training cost, every figure measured side by side in one run (``make bench``).

    python -m fndkit bench [--scale polyvore630|demo|tiny|polyvore519] [--device auto|cpu|cuda]
                           [--users 20|all] [--steps 20] [--out outputs/bench/<scale>-<device>.json]
    python -m fndkit bench --scale polyvore630-jpeg [--items N] ...   (real-layout JPEGs: fndkit/bench/jpeg.py)

Three figures, written to a JSON file and printed as tables:

1. **Scoring** every user's test candidates (``test/random``: each positive with its ten random
   mixtures) with one model, two ways: *cached* (what :func:`fndkit.evaluate.evaluate` does: every
   unique item through the CNN once, every unique outfit through the set transformer once) and
   *per outfit* (every candidate outfit's images re-encoded, as a scorer without a cache does and
   as the paper's Table 5 timed it), and the ratio of the two. Both use the same model (random
   weights: the cost does not depend on them) and must give the same scores (the largest
   difference is reported). Re-encoding every user's candidates at polyvore630 scale takes
   minutes on a CPU, so there ``--users`` (20 by default on CPU, every user on CUDA) picks a
   seeded sample of users whose candidates are re-encoded; the all-user time is then
   extrapolated by rows (each row costs the same) and labelled as such. The sample's user ids
   are in the JSON.
2. **One training step** (batch B positives + N shared negatives) split into its parts, as
   fractions of the step: sampling, image gathering, backbone forward, backbone backward, set
   transformer forward and backward (everything between the loss and the backbone's gradient),
   teacher lookups (FND), augmentations (CL), optimizer, and the rest (loss arithmetic,
   gathers). Measured for the scale preset's teacher (N-pair), its FND student and its FND-CL
   student, each over ``--steps`` steps after two warm-up steps, with the library's own
   objective and model code (hooks time the parts; on CUDA each boundary synchronises).
3. **Peak resident memory** of this process after generating the benchmark and after scoring it
   (``ru_maxrss``; the target at polyvore630 scale is at most 8 GiB), plus CUDA's peak allocation.

The FND teacher and the autoencoder's neighbour table are stand-ins (a randomly initialised
teacher, random same-category neighbours): they cost what the trained ones cost.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .. import objectives as objectives_module
from ..artifacts import write_json
from ..config import SCALE_PRESETS, SCALES, TrainConfig, train_config
from ..models.backbones import student_families
from ..data.datasets import make_loader
from ..data.sampling import NegativeSampler, attach_candidates
from ..data.schema import CATEGORIES, OutfitDataset
from ..data.synthetic import make_dataset
from ..evaluate import item_cache
from ..models.contract import OutfitModel, evaluating, make_image_fn
from ..objectives import TeacherSignal, TrainBatch, make_objective, prepare_teacher
from ..repro import resolve_device, run_metadata, seed_everything
from ..rundir import resolve_path
from ..train import build_model, make_optimizer
from .clock import Clock

SCORING_SPLIT, SCORING_PROTOCOL = "test", "random"
DEFAULT_CPU_USERS = 20
STEP_PARTS = ("sampling", "image gathering", "backbone forward", "backbone backward",
              "set transformer forward", "set transformer backward", "teacher lookups (FND)",
              "augmentations (CL)", "optimizer", "other")
GIB = 2 ** 30
JPEG_SCALE = "polyvore630-jpeg"   # the real-layout bench (fndkit/bench/jpeg.py)


# --------------------------------------------------------------------------------------------
# timing helpers


class PartTimer:
    """Sums the seconds spent in named parts of a step."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.seconds: dict[str, float] = {}

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = self.clock.now()
        try:
            yield
        finally:
            self.add(name, self.clock.now() - start)

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)

        return timed


@contextlib.contextmanager
def _module_hooks(module: torch.nn.Module, timer: PartTimer, forward: str,
                  backward: str | None = None) -> Iterator[dict]:
    """Time ``module``'s forward passes as ``forward``; with ``backward``, record in the returned
    dict when its backward starts (the gradient of its output is ready)."""
    marks: dict = {"forward_start": None, "backward_start": None}

    def pre(_m, _inp):
        marks["forward_start"] = timer.clock.now()

    def post(_m, _inp, _out):
        timer.add(forward, timer.clock.now() - marks["forward_start"])

    def backward_pre(_m, _grad):
        if marks["backward_start"] is None:
            marks["backward_start"] = timer.clock.now()

    handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    if backward is not None:
        handles.append(module.register_full_backward_pre_hook(backward_pre))
    try:
        yield marks
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _timed_attribute(owner, name: str, timer: PartTimer, part: str) -> Iterator[None]:
    """Time every call of ``owner.name`` (a module function or an instance's method) as ``part``."""
    if not hasattr(owner, name):
        raise AttributeError(f"the bench times {owner!r}.{name}, which no longer exists; update "
                             f"fndkit/bench/profile.py to the renamed function")
    original = getattr(owner, name)
    own = name in vars(owner)   # a module's function; an instance's method lives on its class
    setattr(owner, name, timer.wrap(part, original))
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# --------------------------------------------------------------------------------------------
# scoring


@torch.no_grad()
def score_per_outfit(model: OutfitModel, dataset: OutfitDataset, users: np.ndarray, items: np.ndarray,
                     device: str = "cpu", batch_size: int = 512) -> tuple[np.ndarray, int]:
    """Scores of ``users[m]`` for ``items[m]`` with no cache: every row's item images are gathered
    and encoded again, however often an item recurs. Returns (scores float [M], images encoded).

    It must give what :func:`fndkit.evaluate.score_rows` gives, which encodes each unique item
    once: this is what scoring costs without that.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    image_fn = make_image_fn(dataset.images, model.input_size, device)
    out, encoded = [], 0
    with evaluating(model):
        for lo in range(0, len(items), batch_size):
            rows = torch.as_tensor(items[lo:lo + batch_size], device=device)
            mask = rows >= 0
            features = model.encode_items(image_fn(rows[mask].cpu().numpy()))
            encoded += int(mask.sum())
            gathered = features.new_zeros(*rows.shape, features.shape[-1])
            gathered[mask] = features
            u = torch.as_tensor(users[lo:lo + batch_size], device=device)
            out.append(model.score_items(u, gathered, mask).float().cpu())
    return (torch.cat(out).numpy() if out else np.zeros(0, np.float32)), encoded


def sample_users(users: np.ndarray, n: int | None, seed: int = 0) -> np.ndarray:
    """``n`` distinct user ids drawn (seeded) from ``users``, sorted; every user for None."""
    unique = np.unique(users)
    if n is None or n >= len(unique):
        return unique
    return np.sort(np.random.default_rng([seed, 15]).choice(unique, size=n, replace=False))


def bench_scoring(model: OutfitModel, dataset: OutfitDataset, device: str, users_sample: int | None,
                  seed: int = 0) -> dict:
    """Cached vs per-outfit scoring of ``test/random`` with one model (see the module docstring)."""
    clock = Clock(device)
    cand = dataset.candidates[f"{SCORING_SPLIT}/{SCORING_PROTOCOL}"]
    users, items = np.asarray(cand.user), np.asarray(cand.items)
    # warm-up: first calls allocate and pick kernels
    score_per_outfit(model, dataset, users[:64], items[:64], device)

    start = clock.now()
    cache = item_cache(model, dataset, items, device)
    cached = model.score_cached(users, items, cache).float().cpu().numpy()
    cached_seconds = clock.now() - start
    n_unique_items = len(cache)
    del cache

    sample = sample_users(users, users_sample, seed)
    rows = np.flatnonzero(np.isin(users, sample))
    start = clock.now()
    per_outfit, encoded = score_per_outfit(model, dataset, users[rows], items[rows], device)
    sample_seconds = clock.now() - start
    every_user = len(sample) == len(np.unique(users))
    per_outfit_all = sample_seconds * len(users) / max(len(rows), 1)
    return {
        "split": SCORING_SPLIT, "protocol": SCORING_PROTOCOL, "backbone": model.config().get("backbone"),
        "rows": int(len(users)), "users": int(len(np.unique(users))),
        "unique_items": int(n_unique_items), "item_slots": int((items >= 0).sum()),
        "cached_seconds": cached_seconds,
        "per_outfit": {"users": int(len(sample)), "user_ids": sample.tolist(), "rows": int(len(rows)),
                       "images_encoded": encoded, "seconds": sample_seconds},
        "per_outfit_all_seconds": per_outfit_all,
        "per_outfit_all_measured": every_user,
        "ratio": per_outfit_all / cached_seconds if cached_seconds > 0 else float("nan"),
        "max_abs_difference": float(np.abs(cached[rows] - per_outfit).max()) if len(rows) else 0.0,
    }


# --------------------------------------------------------------------------------------------
# one training step, part by part


def stand_in_neighbours(dataset: OutfitDataset, split: str = "train", k: int = 5, seed: int = 0) -> np.ndarray:
    """A *replace* neighbour table [I, k] of random same-category items of ``split``'s positives
    (what 01_autoencoder's table costs to use, without training an autoencoder)."""
    rng = np.random.default_rng([seed, 16])
    items = dataset.outfit_items[dataset.split_mask(split)]
    pool = np.unique(items[items >= 0])
    table = np.full((dataset.n_items, k), -1, dtype=np.int64)
    for c in range(len(CATEGORIES)):
        ids = pool[dataset.item_category[pool] == c]
        if len(ids) > 1:
            table[ids] = ids[rng.integers(len(ids), size=(len(ids), k))]
    return table


@dataclass
class StepSetup:
    """One objective to profile: its name in the tables, its TrainConfig and (FND) its teacher's."""

    name: str
    cfg: TrainConfig
    teacher_cfg: TrainConfig | None = None


def step_setups(scale: str, device: str) -> list[StepSetup]:
    """The scale preset's teacher (N-pair), FND student and FND-CL student (the paper's pair)."""
    teacher = train_config(scale, "teacher", loss="npair", device=device)
    return [StepSetup("teacher npair", teacher),
            StepSetup("student fnd", train_config(scale, "student", loss="fnd", device=device), teacher),
            StepSetup("student fnd+cl", train_config(scale, "student", loss="fnd", lam=0.2, device=device), teacher)]


def frozen_teacher(dataset: OutfitDataset, teacher_cfg: TrainConfig, device: str,
                   split: str = "train") -> tuple[TeacherSignal, float]:
    """FND's teacher signal from a (randomly initialised) ``teacher_cfg`` model: item features of
    every training item cached, r̂_i computed (:func:`fndkit.objectives.prepare_teacher`), and the
    seconds that took (the one-off cost before an FND student's first step)."""
    clock = Clock(device)
    start = clock.now()
    teacher = prepare_teacher(build_model(teacher_cfg, dataset), dataset, split=split, device=device)
    return teacher, clock.now() - start


def profile_step(dataset: OutfitDataset, setup: StepSetup, device: str, steps: int = 20,
                 warmup: int = 2, seed: int = 0, teacher: TeacherSignal | None = None) -> dict:
    """Seconds per part of a training step, summed over ``steps`` steps (after ``warmup``).

    The step is :func:`fndkit.train.fit`'s: sample negatives, build a :class:`TrainBatch`, call the
    objective, backward, SGD step. ``teacher``: FND's prepared teacher signal (built from
    ``setup.teacher_cfg`` when not given). Returns ``{"name", "backbone", "loss", "step_seconds"
    (mean), "parts" (mean seconds per step), "fractions", "teacher_cache_seconds"}``.
    """
    cfg = setup.cfg
    teacher_cache_seconds = None
    if setup.teacher_cfg is None:
        teacher = None
    elif teacher is None:
        teacher, teacher_cache_seconds = frozen_teacher(dataset, setup.teacher_cfg, device, cfg.train_split)
    seed_everything(seed)
    clock, timer = Clock(device), PartTimer(Clock(device))
    neighbours = stand_in_neighbours(dataset, cfg.train_split) if cfg.lam > 0 else None
    objective = make_objective(cfg, teacher=teacher, neighbours=neighbours, truth=dataset.truth)
    model = build_model(cfg, dataset).to(device)
    model.train()
    optimizer = make_optimizer(model, cfg, objective)
    sampler = NegativeSampler(dataset, split=cfg.train_split, n_negatives=cfg.negatives_per_pair,
                              hard_fraction=cfg.hard_fraction, seed=cfg.seed, mode=cfg.negatives)
    image_fn = timer.wrap("image gathering", make_image_fn(dataset.images, model.input_size, device))
    loader = make_loader(dataset, cfg.train_split, cfg.batch_size, shuffle=True, seed=seed, drop_last=True)
    batches, total = [], warmup + steps
    while len(batches) < total:  # small datasets: cycle through the epoch
        batches += [raw for raw, _ in zip(loader, range(total - len(batches)))]

    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        # the backbone's inputs (images) need no gradient, which is what its backward hook is for
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        stack.enter_context(_timed_attribute(objectives_module, "make_views", timer, "augmentations (CL)"))
        if teacher is not None:
            stack.enter_context(_timed_attribute(teacher, "negative_scores", timer, "teacher lookups (FND)"))
        backbone_marks = stack.enter_context(
            _module_hooks(model.backbone, timer, "backbone forward", backward="backbone backward"))
        stack.enter_context(_module_hooks(model.set_transformer, timer, "set transformer forward"))
        step_seconds = 0.0
        for step, raw in enumerate(batches):
            if step == warmup:
                timer.seconds.clear()
                step_seconds = 0.0
            start = clock.now()
            with timer.part("sampling"):
                negatives = sampler.sample(raw["items"].numpy(), raw["users"].numpy(), epoch=0, step=step)
            batch = TrainBatch(raw["users"].to(device), raw["items"].numpy(), negatives, image_fn, 0, step)
            loss, _ = objective(model, batch)
            backbone_marks["backward_start"] = None
            backward_start = clock.now()
            loss.backward()
            backward_end = clock.now()
            split_at = backbone_marks["backward_start"] or backward_end
            timer.add("set transformer backward", split_at - backward_start)
            timer.add("backbone backward", backward_end - split_at)
            with timer.part("optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_seconds += clock.now() - start
    parts = {p: timer.seconds.get(p, 0.0) / steps for p in STEP_PARTS if p != "other"}
    step_mean = step_seconds / steps
    parts["other"] = max(step_mean - sum(parts.values()), 0.0)
    return {"name": setup.name, "backbone": cfg.backbone, "loss": cfg.loss, "lam": cfg.lam,
            "augmentations": cfg.augmentations if cfg.lam > 0 else None,
            "batch_size": cfg.batch_size, "negatives": cfg.negatives_per_pair, "steps": steps,
            "step_seconds": step_mean, "parts": parts,
            "fractions": {p: (s / step_mean if step_mean > 0 else 0.0) for p, s in parts.items()},
            "teacher_cache_seconds": teacher_cache_seconds}


# --------------------------------------------------------------------------------------------
# the whole bench


def run_bench(scale: str = "polyvore630", device: str = "auto", users: int | None | str = "default",
              steps: int = 20, seed: int = 0, progress: bool = True, warmup: int = 2) -> dict:
    """Generate the ``scale`` benchmark, then measure scoring, training steps and memory.

    users: how many users' candidates are re-encoded per outfit: an int, None (every user) or
    "default" (every user on CUDA, ``DEFAULT_CPU_USERS`` on CPU).
    """
    if scale not in SCALES or scale not in SCALE_PRESETS:
        raise ValueError(f"scale={scale!r} is unknown; choose one of {sorted(set(SCALES) & set(SCALE_PRESETS))}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an integer >= 1")
    device = resolve_device(device)
    if users == "default":
        users = None if device.startswith("cuda") else DEFAULT_CPU_USERS
    if users is not None and (not isinstance(users, int) or users < 1):
        raise ValueError(f"users={users!r} must be a positive number of users, or 'all'")
    say = print if progress else (lambda *a, **k: None)
    result = {"scale": scale, "device": device, "seed": seed, "threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
              "machine": {"processor": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), **run_metadata(device)}}
    if device.startswith("cuda"):
        result["machine"]["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        torch.cuda.reset_peak_memory_stats(device)
    image_dir = Path(tempfile.mkdtemp(prefix="fndkit-bench-"))
    try:
        say(f"generating the {scale} benchmark ...", flush=True)
        start = time.perf_counter()
        dataset = make_dataset(scale=scale, seed=seed, cache_dir=image_dir)
        attach_candidates(dataset, seed=seed)
        result["generation_seconds"] = time.perf_counter() - start
        result["dataset"] = {"name": dataset.name, "users": int(dataset.n_users), "outfits": int(dataset.n_outfits),
                             "items": int(dataset.n_items), "image_size": int(dataset.image_size),
                             "image_bytes": int(dataset.n_items) * int(dataset.image_size) ** 2 * 3}
        memory = {"peak_rss_after_generation": peak_rss_bytes()}

        result["scoring"] = []
        for role in ("teacher", "student"):
            cfg = train_config(scale, role, device=device)
            seed_everything(seed)
            model = build_model(cfg, dataset).to(device)
            say(f"scoring with the {role} ({cfg.backbone}) ...", flush=True)
            result["scoring"].append({"role": role, **bench_scoring(model, dataset, device, users, seed),
                                      "peak_rss_after": peak_rss_bytes()})
            del model
        memory["peak_rss_after_scoring"] = peak_rss_bytes()

        result["step"] = []
        setups = step_setups(scale, device)
        teacher_cfg = next(s.teacher_cfg for s in setups if s.teacher_cfg is not None)
        say(f"caching the FND teacher's ({teacher_cfg.backbone}) features of every training item ...", flush=True)
        teacher, result["teacher_cache_seconds"] = frozen_teacher(dataset, teacher_cfg, device)
        for setup in setups:
            say(f"profiling a training step: {setup.name} ({setup.cfg.backbone}) ...", flush=True)
            result["step"].append({**profile_step(dataset, setup, device, steps=steps, warmup=warmup, seed=seed,
                                                  teacher=teacher),
                                   "peak_rss_after": peak_rss_bytes()})
        del teacher
        memory["peak_rss_at_end"] = peak_rss_bytes()
        if device.startswith("cuda"):
            memory["cuda_peak_allocated"] = int(torch.cuda.max_memory_allocated(device))
        result["memory"] = memory
    finally:
        shutil.rmtree(image_dir, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------
# output


def _secs(s: float) -> str:
    return f"{s:.2f}" if s < 10 else f"{s:.1f}" if s < 100 else f"{s:.0f}"


def format_tables(result: dict) -> str:
    """The bench as markdown tables (what the command prints)."""
    m, ds = result["machine"], result["dataset"]
    where = result["device"] if not result["device"].startswith("cuda") else m.get("cuda_device", result["device"])
    lines = [f"fndkit bench · scale {result['scale']} ({ds['users']} users, {ds['outfits']:,} outfits, "
             f"{ds['items']:,} items, {ds['image_size']} px) · {where} · {m.get('cpu_count')} CPUs, "
             f"{result['threads']} torch threads (OMP_WAIT_POLICY {result.get('omp_wait_policy') or 'unset'}) · "
             f"torch {m.get('torch')}", ""]
    s0 = result["scoring"][0]
    lines += [f"Scoring every user's {s0['split']}/{s0['protocol']} candidates: {s0['rows']:,} rows, "
              f"{s0['users']} users, {s0['unique_items']:,} unique items in {s0['item_slots']:,} item slots",
              "", "| model | cached, every user (s) | per outfit, sample (users / rows / s) "
              "| per outfit, every user (s) | per outfit / cached | max score difference |",
              "|---|---|---|---|---|---|"]
    for s in result["scoring"]:
        p = s["per_outfit"]
        all_label = _secs(s["per_outfit_all_seconds"]) + ("" if s["per_outfit_all_measured"] else " (extrapolated)")
        lines.append(f"| {s['role']} {s['backbone']} | {_secs(s['cached_seconds'])} | {p['users']} / {p['rows']:,} / "
                     f"{_secs(p['seconds'])} | {all_label} | {s['ratio']:.1f}× | {s['max_abs_difference']:.1e} |")
    steps = result["step"]
    lines += ["", f"One training step (batch {steps[0]['batch_size']} + {steps[0]['negatives']} shared negatives), "
              f"share of the step (mean of {steps[0]['steps']} steps):", "",
              "| part | " + " | ".join(f"{s['name']} ({s['backbone']})" for s in steps) + " |",
              "|---|" + "---|" * len(steps)]
    for part in STEP_PARTS:
        lines.append(f"| {part} | " + " | ".join(f"{100 * s['fractions'][part]:.1f}%" for s in steps) + " |")
    lines.append("| **step (ms)** | " + " | ".join(f"**{1000 * s['step_seconds']:.1f}**" for s in steps) + " |")
    if result.get("teacher_cache_seconds") is not None:  # older result files lack it
        lines += ["", f"Before an FND student's first step, every training item passes the teacher's CNN once: "
                  f"{_secs(result['teacher_cache_seconds'])} s."]
    mem = result["memory"]
    lines += ["", f"Generation {_secs(result['generation_seconds'])} s. Peak resident memory: "
              f"{mem['peak_rss_after_generation'] / GIB:.2f} GiB after generating, "
              f"{mem['peak_rss_after_scoring'] / GIB:.2f} GiB after scoring (target ≤ 8 GiB), "
              f"{mem['peak_rss_at_end'] / GIB:.2f} GiB after the training steps"
              + (f"; CUDA peak allocated {mem['cuda_peak_allocated'] / GIB:.2f} GiB" if "cuda_peak_allocated" in mem else "")
              + "."]
    return "\n".join(lines)


def default_out(scale: str, device: str) -> Path:
    return resolve_path(Path("outputs") / "bench" / f"{scale}-{device.split(':')[0]}.json")


def table5_record(folder: str | os.PathLike, run_dirs: list, device: str = "auto", repeats: int = 10) -> Path:
    """Table 5 as a bench record: per seed's run folder, the parameters, the time to score every
    user's test candidates (mean and sd of ``repeats`` runs, item features cached; CUDA-synchronised)
    and the peak GPU memory, for the teacher and the XS / S / M students (untrained: timing only).
    Written to ``<folder>/table5.json`` in the results schema; :func:`fndkit.results.collect` reads it."""
    from ..evaluate import evaluate
    from ..models.backbones import count_parameters
    from ..models.registry import build_model as build_registered
    from ..rundir import RunFolder

    dev = resolve_device(device)
    rows = []
    for run_dir in run_dirs:
        run = RunFolder(run_dir)
        if not run.has_data():
            continue
        ds = run.dataset()
        seed = int(run.root.name.removeprefix("seed")) if run.root.name.removeprefix("seed").isdigit() else 0
        for size, backbone in student_families(run.preset_name()).items():
            torch.manual_seed(0)
            model = build_registered("recommender", backbone=backbone, n_users=ds.n_users, dim=128, heads=8)
            model = model.to(dev).eval()
            seconds = []
            if dev.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            clock = Clock(dev)
            for _ in range(repeats):
                t0 = clock.now()
                evaluate(model, ds, split="test", device=dev)
                seconds.append(clock.now() - t0)
            peak = torch.cuda.max_memory_allocated() / 2 ** 20 if dev.startswith("cuda") else float("nan")
            base = {"experiment": "table5", "method": size, "stage": backbone, "run_dir": str(run.root), "seed": seed,
                    "params": "{}", "shown": json.dumps({"size": size, "backbone": backbone}), "protocol": "-",
                    "list": "-"}
            rows += [{**base, "metric": "params", "value": float(count_parameters(model))},
                     {**base, "metric": "score_seconds_mean", "value": float(np.mean(seconds))},
                     {**base, "metric": "score_seconds_sd", "value": float(np.std(seconds))},
                     {**base, "metric": "peak_gpu_mib", "value": peak}]
    path = Path(folder) / "table5.json"
    write_json(path, {"device": dev, "repeats": repeats, "rows": rows})
    return path


def save_result(result: dict, out: str | os.PathLike | None, command: str) -> Path:
    """Write a bench's JSON with the command that made it to ``out`` (default:
    :func:`default_out`); return the path."""
    path = resolve_path(out) if out else default_out(result["scale"], result["device"])
    result["command"] = command
    write_json(path, result)
    return path
