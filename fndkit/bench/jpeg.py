"""The real-layout bench: training fed from a Polyvore-U-layout JPEG release, side by side with
training fed from an in-memory array (``python -m fndkit bench --scale polyvore630-jpeg``).

    python -m fndkit bench --scale polyvore630-jpeg [--items 199537] [--device auto] [--steps 10]
                           [--fly-steps 2] [--workers N] [--out outputs/bench/polyvore630-jpeg-<device>.json]

1. **Fixture** (built once, cached under ``outputs/bench/fixtures/polyvore630-jpeg-<items>/``): a
   generated release in the exact layout 00_data reads (:mod:`fndkit.data.release_fixture`:
   291 px JPEGs of about 25 KB, image lists, tuples CSVs; Polyvore-630's proportions scaled to
   ``--items``, 199,537 by default as in the release).
2. **Decode once** into the uint8 store at 224 px (:func:`fndkit.data.decode.decode_store`, every
   core): images / s, processes, seconds, the store's bytes on disk.
3. **Training steps / s** of the real-data pair at 224 px (``alexnet-large`` teacher and
   ``alexnet-xs`` student, N-pair, batch 32 + 32 shared negatives), each fed three ways by the
   loop :func:`fndkit.train.fit` runs (loader, negative sampling, prefetch on CUDA, objective,
   backward, SGD): from the memory-mapped JPEG store, from the same pixels in an in-memory array
   (the bound), and (``--fly-steps``) decoding the JPEGs at every step as before. The ratio
   store / array is the target (≤ 1.2 on CPU). A backbone-only bound (the CNN's forward and
   backward on the step's number of images already on the device) and a Polyvore-630 epoch time
   (3,525 steps, extrapolated from the step rate, labelled so) come beside them.
4. **Peak memory and disk**: resident set size, the fixture's and the store's bytes; on CUDA the
   peak allocation and the GPU's busy fraction while the store feeds it (``nvidia-smi`` sampled
   every 100 ms; skipped, saying why, without a GPU).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .clock import Clock
from .profile import JPEG_SCALE, peak_rss_bytes
from ..config import train_config
from ..data.decode import available_cores, decode_store, store_bytes
from ..data.images import FileImages
from ..data.polyvore import read_polyvore_u
from ..feeding import batch_item_ids, prefetch_images
from ..data.release_fixture import POLYVORE630, write_release
from ..data.sampling import NegativeSampler
from ..data.schema import ArrayImages
from ..data.datasets import make_loader
from ..models.contract import make_image_fn
from ..objectives import make_objective
from ..repro import resolve_device, run_metadata, seed_everything
from ..rundir import resolve_path
from ..train import build_model, make_optimizer, train_batch

SCALE = JPEG_SCALE
IMAGE_SIZE = 224
EPOCH_STEPS_630 = 3_525          # Polyvore-630's training positives / batch 32
GIB = 2 ** 30
STORE, ARRAY, FLY = "jpeg store (memory-mapped)", "in-memory array", "JPEG decoded every step"


def fixture_dir(items: int) -> Path:
    return resolve_path(Path("outputs") / "bench" / "fixtures" / f"{SCALE}-{items}")


# --------------------------------------------------------------------------------------------
# GPU busy fraction


class GpuBusy:
    """Samples ``nvidia-smi``'s utilisation of GPU ``index`` every ``interval_ms`` while active
    (a context manager); ``result()`` is ``{"busy_fraction", "samples"}`` or ``{"skipped": why}``."""

    def __init__(self, enabled: bool, index: int = 0, interval_ms: int = 100):
        self.enabled, self.index, self.interval_ms = enabled, index, interval_ms
        self.samples: list[float] = []
        self.skipped = None if enabled else "no CUDA device"
        self._proc = None
        self._reader = None

    def __enter__(self) -> "GpuBusy":
        if self.skipped is None and shutil.which("nvidia-smi") is None:
            self.skipped = "nvidia-smi not found"
        if self.skipped is None:
            self._proc = subprocess.Popen(
                ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
                 "--format=csv,noheader,nounits", f"-lms={self.interval_ms}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            value = parse_utilization(line)
            if value is not None:
                self.samples.append(value)

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._reader.join(timeout=10)

    def result(self) -> dict:
        if self.skipped:
            return {"skipped": self.skipped}
        if not self.samples:
            return {"skipped": "nvidia-smi gave no samples"}
        return {"busy_fraction": float(np.mean(self.samples)) / 100, "samples": len(self.samples)}


def parse_utilization(line: str) -> float | None:
    """``"87"`` or ``"87 %"`` -> 87.0; anything else (a header, "[N/A]") -> None."""
    text = line.strip().rstrip("%").strip()
    try:
        return float(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# the training loop, timed


def loop_steps(dataset, cfg, device: str, sources: dict, steps: int, warmup: int = 1, seed: int = 0,
               prefetch: bool | None = None, gpu: GpuBusy | None = None) -> dict:
    """Seconds per step of ``fit()``'s loop (loader, negative sampling, prefetch on CUDA,
    objective, backward, SGD step; not its end-of-epoch validation) fed from each image store of
    ``sources`` (name -> store), over ``warmup + steps`` steps, the first ``warmup`` untimed.

    Several sources are interleaved step by step (one model; each step's batch run once per
    source, the order alternating), so that whatever else the machine does at that moment slows
    every source alike and their ratio stays fair on a shared box. Each step synchronises, as
    ``fit()``'s ``loss.item()`` does. Returns name -> ``{"steps", "step_seconds",
    "steps_per_second", "images_per_step", "prefetch"}``.
    """

    prefetch = str(device).startswith("cuda") if prefetch is None else prefetch
    seed_everything(seed)
    model = build_model(cfg, dataset).to(device)
    model.train()
    objective = make_objective(cfg)
    optimizer = make_optimizer(model, cfg, objective)
    sampler = NegativeSampler(dataset, split=cfg.train_split, n_negatives=cfg.negatives_per_pair,
                              hard_fraction=cfg.hard_fraction, seed=cfg.seed, mode=cfg.negatives)
    loader = make_loader(dataset, cfg.train_split, cfg.batch_size, shuffle=True, seed=seed, drop_last=True)
    total = warmup + steps
    raws = []
    while len(raws) < total:   # small fixtures: cycle through the epoch
        raws += [raw for raw, _ in zip(loader, range(total - len(raws)))]

    def batches_from(store):
        image_fn = make_image_fn(store, model.input_size, device)
        batches = (train_batch(raw, sampler, image_fn, device, 0, step) for step, raw in enumerate(raws))
        return iter(prefetch_images(batches, store, model.input_size, device) if prefetch else batches)

    timed = {name: _TimedStore(store) for name, store in sources.items()}
    streams = {name: batches_from(store) for name, store in timed.items()}
    seconds = dict.fromkeys(sources, 0.0)
    clock = Clock(device)
    per_step = {name: [] for name in sources}
    images_per_step = []
    if gpu is not None:
        gpu.__enter__()
    try:
        for step in range(total):
            names = list(sources) if step % 2 == 0 else list(sources)[::-1]
            for name in names:
                start = clock.now()
                batch = next(streams[name])
                loss, _ = objective(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss.item()
                if step >= warmup:
                    took = clock.now() - start
                    seconds[name] += took
                    per_step[name].append(took)
                else:
                    timed[name].seconds = 0.0
            if step >= warmup:
                images_per_step.append(len(batch_item_ids(batch)))
    finally:
        if gpu is not None:
            gpu.__exit__(None, None, None)
        for stream in streams.values():
            stream.close() if hasattr(stream, "close") else None
    out = {name: {"steps": steps, "step_seconds": sec / steps, "steps_per_second": steps / sec,
                  "step_seconds_each": per_step[name], "median_step_seconds": float(np.median(per_step[name])),
                  "gather_seconds_per_step": timed[name].seconds / steps,
                  "images_per_step": float(np.mean(images_per_step)), "prefetch": bool(prefetch)}
           for name, sec in seconds.items()}
    return out


class _TimedStore:
    """An image store that adds up the seconds its ``get`` takes (the image gathering itself)."""

    def __init__(self, store):
        self.store, self.seconds, self.image_size = store, 0.0, store.image_size

    def __len__(self) -> int:
        return len(self.store)

    def get(self, item_ids):
        start = time.perf_counter()
        try:
            return self.store.get(item_ids)
        finally:
            self.seconds += time.perf_counter() - start


def backbone_bound(cfg, dataset, device: str, images: int, steps: int, warmup: int = 1) -> dict:
    """The CNN alone: forward and backward of ``images`` random images already on the device
    (at the model's input size), per step; the most any feeding could reach."""
    seed_everything(0)
    model = build_model(cfg, dataset).to(device)
    side = model.input_size or dataset.image_size
    x = torch.randn(images, 3, side, side, device=device)
    clock = Clock(device)
    for step in range(warmup + steps):
        if step == warmup:
            start = clock.now()
        model.encode_items(x).square().mean().backward()
    seconds = clock.now() - start
    return {"steps": steps, "images": images, "step_seconds": seconds / steps, "steps_per_second": steps / seconds}


def _disk_bytes(path: Path) -> int:
    """Bytes ``path`` (a file or folder) occupies on disk (allocated blocks: the store is sparse
    until written)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return int(sum(os.stat(p).st_blocks * 512 for p in files))


# --------------------------------------------------------------------------------------------
# the bench


def run_jpeg_bench(items: int = POLYVORE630["items"], device: str = "auto", steps: int = 10,
                   warmup: int = 1, fly_steps: int = 2, workers: int | None = None, seed: int = 0,
                   fixture: str | os.PathLike | None = None, progress: bool = True,
                   keep_store: bool = False, image_size: int = IMAGE_SIZE, backbones: dict | None = None,
                   batch_size: int | None = None) -> dict:
    """Build (once) the fixture, decode it, and time the pair's steps fed three ways (module docstring).

    image_size, backbones (``{"teacher": ..., "student": ...}``) and batch_size replace the real
    pair's 224 px AlexNets and batch 32 (tests run the bench in seconds with small CNNs)."""
    if not isinstance(items, int) or items < 40:
        raise ValueError(f"items={items!r} must be an integer >= 40 (199537 is Polyvore-630)")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an integer >= 1")
    device = resolve_device(device)
    say = print if progress else (lambda *a, **k: None)
    workers = available_cores() if workers is None else int(workers)
    root = Path(fixture) if fixture else fixture_dir(items)
    result: dict = {"scale": SCALE, "device": device, "seed": seed, "threads": torch.get_num_threads(),
                    "machine": {"cpu_count": os.cpu_count(), "cores_available": available_cores(),
                                **run_metadata(device)},
                    "full_size": items == POLYVORE630["items"]}
    cuda = device.startswith("cuda")
    if cuda:
        result["machine"]["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        torch.cuda.reset_peak_memory_stats(device)

    say(f"fixture: {items:,} items at {root} (built once, then reused) ...", flush=True)
    start = time.perf_counter()
    record = write_release(root / "release", items, seed=seed, workers=workers, progress=progress)
    result["fixture"] = {**record, "root": str(root / "release"), "seconds_now": time.perf_counter() - start,
                         "disk_bytes": _disk_bytes(root / "release")}

    dataset = read_polyvore_u(root / "release", "630", image_size=image_size)
    files = dataset.images
    result["dataset"] = {"users": int(dataset.n_users), "outfits": int(dataset.n_outfits),
                         "items": int(dataset.n_items), "image_size": image_size,
                         "train_outfits": int(len(dataset.outfits_of("train")))}

    store = root / f"store-{image_size}"
    if not keep_store:
        shutil.rmtree(store, ignore_errors=True)   # measure the decode every run
    stats: dict = {}
    pixels = decode_store(files, store, workers=workers, progress=progress, stats=stats)
    decoded = stats["decoded"]
    result["decode"] = {"images": decoded, "seconds": stats["seconds"], "workers": workers,
                        "images_per_second": decoded / stats["seconds"] if decoded else None,
                        "store_bytes": store_bytes(items, image_size), "store_disk_bytes": _disk_bytes(store),
                        "reused": decoded == 0}
    if not decoded:   # the store was kept: its decode was measured when it was built (store.json)
        built = json.loads((store / "store.json").read_text())
        result["decode"]["when_built"] = {"images": items, "seconds": built.get("decode_seconds"),
                                          "workers": built.get("workers"),
                                          "images_per_second": items / built["decode_seconds"]
                                          if built.get("decode_seconds") else None}
    if decoded:
        rate = decoded / stats["seconds"]
        result["decode"]["polyvore630_extrapolated"] = {
            "images": POLYVORE630["items"], "seconds": POLYVORE630["items"] / rate,
            "store_bytes": store_bytes(POLYVORE630["items"], image_size)}
    memory = {"peak_rss_after_decode": peak_rss_bytes()}

    sources = {STORE: ArrayImages(pixels)}
    say("copying the store into memory (the bound) ...", flush=True)
    sources[ARRAY] = ArrayImages(np.array(pixels))

    result["steps"] = []
    for role in ("teacher", "student"):
        cfg = train_config("real", role, loss="npair", device=device, weights=None,
                           backbone=(backbones or {}).get(role), batch_size=batch_size)
        row = {"role": role, "backbone": cfg.backbone, "batch_size": cfg.batch_size,
               "negatives": cfg.negatives_per_pair, "sources": {}}
        say(f"{role} ({cfg.backbone}): {steps} steps each from the store and from memory, interleaved ...", flush=True)
        fair = {name: sources[name] for name in (STORE, ARRAY)}
        row["sources"] = loop_steps(dataset, cfg, device, fair, steps, warmup=warmup, seed=seed)
        if fly_steps:
            say(f"{role} ({cfg.backbone}): {fly_steps} steps decoding JPEGs every step ...", flush=True)
            # a fresh reader per model: the same seeded batches must not be served from the
            # previous model's decoded-image cache
            fresh = FileImages(files.root, files.names, image_size=image_size)
            row["sources"][FLY] = loop_steps(dataset, cfg, device, {FLY: fresh}, fly_steps,
                                             warmup=warmup, seed=seed)[FLY]
        gpu = GpuBusy(cuda, index=torch.device(device).index or 0)
        if cuda:   # the GPU's busy fraction while the store alone feeds it
            say(f"{role} ({cfg.backbone}): {steps} steps from the store, sampling nvidia-smi ...", flush=True)
            row["store_alone"] = loop_steps(dataset, cfg, device, {STORE: sources[STORE]}, steps,
                                            warmup=warmup, seed=seed, gpu=gpu)[STORE]
        row["gpu_busy"] = gpu.result()
        store_s, array_s = row["sources"][STORE]["step_seconds"], row["sources"][ARRAY]["step_seconds"]
        row["store_over_array_mean"] = store_s / array_s
        # the target figure: the median over steps of (store step / array step), the two run back to
        # back on one model, so that a shared machine's load swings cancel
        row["store_over_array"] = float(np.median(np.asarray(row["sources"][STORE]["step_seconds_each"])
                                                  / np.asarray(row["sources"][ARRAY]["step_seconds_each"])))
        say(f"{role}: the backbone alone ...", flush=True)
        images_per_step = int(round(row["sources"][ARRAY]["images_per_step"]))
        row["backbone_only"] = backbone_bound(cfg, dataset, device, images_per_step, steps, warmup)
        row["polyvore630_epoch_seconds_extrapolated"] = {
            "steps": EPOCH_STEPS_630, "jpeg_store": EPOCH_STEPS_630 * store_s,
            "in_memory_array": EPOCH_STEPS_630 * array_s,
            "backbone_only": EPOCH_STEPS_630 * row["backbone_only"]["step_seconds"]}
        if FLY in row["sources"]:
            row["on_the_fly_over_array"] = row["sources"][FLY]["step_seconds"] / array_s
        row["peak_rss_after"] = peak_rss_bytes()
        result["steps"].append(row)
        dataset.images = files
    memory["peak_rss_at_end"] = peak_rss_bytes()
    if cuda:
        memory["cuda_peak_allocated"] = int(torch.cuda.max_memory_allocated(device))
    result["memory"] = memory
    result["disk"] = {"fixture_bytes": result["fixture"]["disk_bytes"], "store_bytes": result["decode"]["store_disk_bytes"]}
    return result


def format_jpeg_tables(result: dict) -> str:
    """The real-layout bench as markdown (what the command prints)."""
    m, ds, dec = result["machine"], result["dataset"], result["decode"]
    where = m.get("cuda_device", result["device"])
    lines = [f"fndkit bench · {result['scale']} ({ds['users']} users, {ds['outfits']:,} outfits, {ds['items']:,} "
             f"items{'' if result['full_size'] else ', reduced size'}, JPEG 291 px read at {ds['image_size']} px) · "
             f"{where} · {m.get('cpu_count')} CPUs, {result['threads']} torch threads · torch {m.get('torch')}", ""]
    if dec["images"]:
        lines.append(f"Decode once: {dec['images']:,} images in {dec['seconds']:.1f} s = "
                     f"{dec['images_per_second']:.0f} images/s with {dec['workers']} processes; store "
                     f"{dec['store_bytes'] / 1e9:.2f} GB"
                     + (f" (Polyvore-630, extrapolated: {dec['polyvore630_extrapolated']['seconds'] / 60:.0f} min, "
                        f"{dec['polyvore630_extrapolated']['store_bytes'] / 1e9:.1f} GB)"
                        if not result["full_size"] else "") + ".")
    else:
        built = dec.get("when_built", {})
        lines.append("Decode once: the store was kept from an earlier run"
                     + (f" (built in {built['seconds']:.1f} s = {built['images_per_second']:.0f} images/s with "
                        f"{built['workers']} processes)" if built.get("seconds") else "") + ".")
    lines += ["", "| model | fed from | steps | s / step (mean) | s / step (median) | steps / s | gathering images (ms / step) "
              "| vs in-memory array (mean) |", "|---|---|---|---|---|---|---|---|"]
    for row in result["steps"]:
        array_s = row["sources"][ARRAY]["step_seconds"]
        for name, r in row["sources"].items():
            lines.append(f"| {row['role']} {row['backbone']} | {name} | {r['steps']} | {r['step_seconds']:.3f} | "
                         f"{r['median_step_seconds']:.3f} | {r['steps_per_second']:.3f} | "
                         f"{1000 * r['gather_seconds_per_step']:.1f} | {r['step_seconds'] / array_s:.2f}× |")
        b = row["backbone_only"]
        lines.append(f"| {row['role']} {row['backbone']} | backbone only ({b['images']} images on the device) | "
                     f"{b['steps']} | {b['step_seconds']:.3f} | | {b['steps_per_second']:.3f} | | "
                     f"{b['step_seconds'] / array_s:.2f}× |")
    lines.append("")
    for row in result["steps"]:
        e = row["polyvore630_epoch_seconds_extrapolated"]
        busy = row.get("gpu_busy", {})
        busy_text = (f"GPU busy {100 * busy['busy_fraction']:.0f}% ({busy['samples']} samples)"
                     if "busy_fraction" in busy else f"GPU busy: skipped ({busy.get('skipped')})")
        lines.append(f"- {row['role']} {row['backbone']}: store / array {row['store_over_array']:.2f}× (median of the "
                     f"steps run back to back; target ≤ 1.2 on CPU; mean {row['store_over_array_mean']:.2f}×); a Polyvore-630 epoch ({e['steps']:,} steps, extrapolated) {e['jpeg_store'] / 60:.1f} min "
                     f"from the store, {e['in_memory_array'] / 60:.1f} min from memory, "
                     f"{e['backbone_only'] / 60:.1f} min backbone only; {busy_text}.")
    mem = result["memory"]
    lines += ["", f"Peak resident memory {mem['peak_rss_at_end'] / GIB:.2f} GiB (the in-memory copy of the store "
              f"included)" + (f"; CUDA peak allocated {mem['cuda_peak_allocated'] / GIB:.2f} GiB"
                              if "cuda_peak_allocated" in mem else "")
              + f". Disk: fixture {result['disk']['fixture_bytes'] / 1e9:.2f} GB, store "
              f"{result['disk']['store_bytes'] / 1e9:.2f} GB."]
    return "\n".join(lines)
