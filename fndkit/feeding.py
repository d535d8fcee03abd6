"""Background image prefetch for training: the next step's images gathered while this one computes.

:func:`prefetch_images` wraps the stream of :class:`~fndkit.objectives.TrainBatch` that
:func:`fndkit.train.fit` builds. For each batch, a background thread gathers the uint8 images of
every item the batch names (positives and negatives) from the image store, into pinned memory,
and copies them to the device with a non-blocking copy on a side CUDA stream; the batch's
``image_fn`` then serves those ids from the device copy (float conversion, resize and ImageNet
normalisation run on the device, as :func:`fndkit.models.backbones.images_to_tensor` does) and
falls back to the store for any id it was not given (e.g. items an augmentation swaps in). The
result is the tensor the plain ``image_fn`` returns, bit for bit on the CPU: the same uint8
pixels go through the same operations. Model-agnostic: nothing here knows the model.

Off by default on a CPU (:func:`fndkit.train.fit` turns it on for CUDA): there the step is the
compute, gathering from a memory-mapped store costs milliseconds, and a second busy thread on a
small CPU only competes with the step.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from .models.backbones import images_to_tensor


def batch_item_ids(batch: Any) -> np.ndarray:
    """Sorted unique item ids (>= 0) a TrainBatch's positives and negatives name."""
    ids = np.concatenate([np.asarray(batch.positives).ravel(), np.asarray(batch.negatives).ravel()])
    return np.unique(ids[ids >= 0]).astype(np.int64)


class PrefetchedImages:
    """An ``image_fn`` (ids [K] -> float [K, 3, size, size] on ``device``) that serves the ids it
    was prefetched with from ``pixels`` (uint8 [M, H, W, 3] on ``device``, row m = ``ids[m]``) and
    any other id from ``store``."""

    def __init__(self, ids: np.ndarray, pixels: torch.Tensor, store: Any, size: int | None,
                 device: str | torch.device, ready: Any = None):
        self.ids, self.pixels, self.store = ids, pixels, store
        self.size, self.device, self.ready = size, device, ready

    def __call__(self, item_ids: np.ndarray) -> torch.Tensor:
        if self.ready is not None:   # the side stream's copy must land before this stream reads it
            torch.cuda.current_stream(self.pixels.device).wait_event(self.ready)
            self.pixels.record_stream(torch.cuda.current_stream(self.pixels.device))
            self.ready = None
        ids = np.asarray(item_ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos_clipped = np.minimum(pos, max(len(self.ids) - 1, 0))
        hit = (self.ids[pos_clipped] == ids) if len(self.ids) else np.zeros(len(ids), bool)
        if hit.all():
            uint8 = self.pixels[torch.as_tensor(pos_clipped, device=self.pixels.device)]
        else:
            uint8 = torch.empty((len(ids),) + tuple(self.pixels.shape[1:]), dtype=torch.uint8,
                                device=self.pixels.device)
            if hit.any():
                uint8[torch.as_tensor(np.flatnonzero(hit), device=uint8.device)] = \
                    self.pixels[torch.as_tensor(pos_clipped[hit], device=self.pixels.device)]
            miss = np.flatnonzero(~hit)
            uint8[torch.as_tensor(miss, device=uint8.device)] = \
                torch.from_numpy(np.ascontiguousarray(self.store.get(ids[miss]))).to(uint8.device)
        return images_to_tensor(uint8, self.size, self.device)


def _gather(store: Any, ids: np.ndarray, device: torch.device, stream: Any) -> tuple[torch.Tensor, Any]:
    """The uint8 images of ``ids`` on ``device``: pinned and copied asynchronously on ``stream``
    (CUDA; returns the event that marks the copy done), or as they are (CPU)."""
    pixels = torch.from_numpy(np.ascontiguousarray(store.get(ids)))
    if stream is None:
        return pixels, None
    pixels = pixels.pin_memory()
    with torch.cuda.stream(stream):
        on_device = pixels.to(device, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(stream)
    return on_device, ready


def prefetch_images(batches: Iterable[Any], store: Any, size: int | None, device: str | torch.device,
                    depth: int = 2) -> Iterator[Any]:
    """Yield ``batches`` (TrainBatch) in order, each with an ``image_fn`` whose images were
    gathered in a background thread up to ``depth`` batches ahead. ``store``: the image store
    (``dataset.images``); ``size``: the model's input size (None keeps the store's)."""
    device = torch.device(device)
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    queue: deque = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fndkit-prefetch") as pool:
        def ready_batch() -> Any:
            batch, ids, future = queue.popleft()
            pixels, event = future.result()
            return dataclasses.replace(batch, image_fn=PrefetchedImages(ids, pixels, store, size, device, event))

        for batch in batches:
            ids = batch_item_ids(batch)
            queue.append((batch, ids, pool.submit(_gather, store, ids, device, stream)))
            if len(queue) > depth:
                yield ready_batch()
        while queue:
            yield ready_batch()
