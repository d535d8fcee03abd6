"""Decode once: every item image of a release, at the working size, into one uint8 store.

Real Polyvore-U is ~200k JPEGs of 291 px. Decoding them inside the training loop
(:class:`~fndkit.data.images.FileImages`) costs a few milliseconds an image, every step of every
epoch; gathering the same images from a uint8 array costs microseconds. So 00_data decodes each
image once, in parallel over the cores, into ``<store>/images.npy`` (uint8 ``[n_items, S, S, 3]``,
a plain ``.npy`` that training memory-maps, as the synthetic benchmark's images are), and the
dataset folder links to it. The pixels are exactly what ``FileImages`` gives (same decoder, same
resize), so training on the store equals training on the files.

The store folder::

    <store>/store.json   what it holds: n_items, image_size, the release fingerprint, complete
    <store>/images.npy   the pixels (allocated sparse up front; S * S * 3 bytes an image)
    <store>/done.npy     one bool per chunk of ``chunk_items`` images: written and flushed

A killed decode resumes: a chunk is marked in ``done.npy`` (written atomically) only after its
pixels are written and flushed, so a rerun decodes exactly the chunks not marked. The store counts
as built only when ``store.json`` says ``"complete": true`` (written last, atomically). A store
built for another image size or from another release (other file names) is refused,
naming both. A corrupt or truncated image stops the decode naming the item and the file (and its
image-list line, through ``origin``); the chunks done so far stay done.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import atomic_path, to_json
from .errors import DatasetError
from .images import FileImages

STORE_FORMAT = 1
INFO_FILE, PIXELS_FILE, DONE_FILE = "store.json", "images.npy", "done.npy"
DEFAULT_CHUNK = 256
DONE_EVERY_S = 1.0   # how often done.npy is rewritten while decoding
GB = 1e9


def store_bytes(n_items: int, image_size: int) -> int:
    """Bytes of the decoded store's pixels: ``n_items * S * S * 3`` (the .npy header aside)."""
    return int(n_items) * int(image_size) ** 2 * 3


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def release_fingerprint(images: FileImages) -> str:
    """A short hash of which release the images are: their layout and their names in item order
    (the release names each file by a hash of its content). Another release or another image list
    gives another fingerprint; a corrupt file replaced by a good copy keeps it, so the decode it
    stopped resumes."""
    h = hashlib.sha256(f"{images.kind}\n".encode())
    for name in images.names:
        h.update(name.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def disk_cost(n_items: int, image_size: int, folder: str | os.PathLike) -> dict:
    """What the store will take and what the disk holding ``folder`` has free."""
    folder = Path(folder)
    where = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    usage = shutil.disk_usage(where)
    return {"bytes": store_bytes(n_items, image_size), "free_bytes": int(usage.free), "disk": str(where)}


# --------------------------------------------------------------------------------------------
# the worker side: decode a chunk, write it at its offset with ordinary writes


_WORKER: dict = {}


def _init_worker(images: FileImages, pixels_path: str, offset: int) -> None:
    _WORKER.update(images=images, path=pixels_path, offset=offset)


def _decode_chunk(lo: int, hi: int) -> int:
    """Decode items ``lo..hi-1`` and write them into the store; return how many. Writes go through
    the file (not a writable map) so that the pages stay in the page cache, not in this process's
    resident memory; ``fsync`` makes them durable before the chunk is marked done."""
    images, S = _WORKER["images"], _WORKER["images"].image_size
    block = np.empty((hi - lo, S, S, 3), dtype=np.uint8)
    for k, item in enumerate(range(lo, hi)):
        block[k] = images._decode(item)  # not get(): no cache to fill
    fd = os.open(_WORKER["path"], os.O_WRONLY)
    try:
        os.pwrite(fd, block.tobytes(), _WORKER["offset"] + lo * S * S * 3)
        os.fsync(fd)
    finally:
        os.close(fd)
    return hi - lo


# --------------------------------------------------------------------------------------------
# the store


def _read_info(folder: Path) -> dict | None:
    path = folder / INFO_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not JSON, not UTF-8
        return None   # written atomically, so only a foreign file gets here: start over


def _write_info(folder: Path, info: dict) -> None:
    with atomic_path(folder / INFO_FILE) as tmp:
        tmp.write_text(to_json(info) + "\n")


def _write_done(folder: Path, done: np.ndarray) -> None:
    with atomic_path(folder / DONE_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, done)


def _refuse_other(folder: Path, old: dict, want: dict) -> None:
    """Stop when ``folder`` holds a store of another size or release, naming both and the fix."""
    diffs = [f"{key} {old.get(key)!r} there, {want[key]!r} here"
             for key in ("image_size", "n_items", "release", "chunk_items") if old.get(key) != want[key]]
    if not diffs:
        return
    what = "another image size" if old.get("image_size") != want["image_size"] else "another release"
    raise DatasetError(
        f"the decoded image store {folder} was built for {what} ({'; '.join(diffs)}; it was decoded "
        f"from {old.get('source')!r}); delete {folder} to decode this release again (or rerun "
        f"00_data with overwrite=True, which replaces it)")


def is_complete_store(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a finished store (its pixels are never written again)."""
    info = _read_info(Path(folder))
    return bool(info and info.get("complete") and info.get("format") == STORE_FORMAT)


def open_store(folder: str | os.PathLike) -> np.ndarray:
    """The pixels of a complete store, memory-mapped read-only."""
    return np.load(Path(folder) / PIXELS_FILE, mmap_mode="r")


def decode_store(images: FileImages, folder: str | os.PathLike, *, workers: int | None = None,
                 chunk_items: int = DEFAULT_CHUNK, progress: bool = True,
                 origin: Callable[[int], str] | None = None, stats: dict | None = None) -> np.ndarray:
    """Decode every image of ``images`` into the store at ``folder`` (resuming one a killed run
    left) and return its pixels memory-mapped (uint8 ``[n_items, S, S, 3]``).

    workers: processes decoding at once (default: every core this process may use; 1 decodes in
    this process). chunk_items: images per chunk, the unit of resumption. progress: a tqdm bar.
    origin: item -> where it comes from (e.g. its image-list line), added to a decode error.
    stats: filled with what the decode did (images decoded now, seconds, workers, bytes).
    Prints the disk cost before it starts and refuses to start when the disk lacks room.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    n, S = len(images), images.image_size
    workers = available_cores() if workers is None else int(workers)
    if workers < 1:
        raise DatasetError(f"workers={workers} must be >= 1")
    want = {"format": STORE_FORMAT, "n_items": n, "image_size": S, "release": release_fingerprint(images),
            "chunk_items": int(chunk_items), "source": str(images.root), "kind": images.kind}
    stats = {} if stats is None else stats
    stats.update(images=n, decoded=0, seconds=0.0, workers=workers, bytes=store_bytes(n, S), resumed=False)
    old = _read_info(folder)
    if old is not None:
        _refuse_other(folder, old, want)
        if old.get("complete"):
            return open_store(folder)
    pixels_path = folder / PIXELS_FILE
    n_chunks = -(-n // chunk_items)
    done = np.zeros(n_chunks, dtype=bool)
    if old is not None and pixels_path.is_file() and (folder / DONE_FILE).is_file():
        saved = np.load(folder / DONE_FILE)
        if saved.shape == done.shape:
            done, stats["resumed"] = saved.astype(bool), True
    cost = disk_cost(n, S, folder)
    if not stats["resumed"]:
        print(f"decoding {n:,} images once at {S} px into {pixels_path}: {cost['bytes'] / GB:.2f} GB "
              f"(uint8, {S * S * 3:,} B an image); {cost['free_bytes'] / GB:.1f} GB free on {cost['disk']}",
              flush=True)
        if cost["bytes"] > cost["free_bytes"]:
            raise DatasetError(
                f"decoding {n:,} images at {S} px needs {cost['bytes'] / GB:.2f} GB but {cost['disk']} has "
                f"{cost['free_bytes'] / GB:.2f} GB free; free some space, put the run folder on a larger "
                f"disk, lower image_size, or set decode='on_the_fly' (decodes every image at every "
                f"step: slow, no disk)")
        folder.mkdir(parents=True, exist_ok=True)
        # a new file (new inode), never the old one truncated: a dataset folder may link to it
        pixels_path.unlink(missing_ok=True)
        # allocated sparse: the disk fills as chunks are written
        np.lib.format.open_memmap(pixels_path, mode="w+", dtype=np.uint8, shape=(n, S, S, 3)).flush()
        _write_done(folder, done)
        _write_info(folder, {**want, "complete": False})
    offset = int(open_store(folder).offset)   # where the pixels start, after the .npy header
    todo = [c for c in range(n_chunks) if not done[c]]
    if stats["resumed"] and todo:
        print(f"resuming the decode into {pixels_path}: {int(done.sum())} of {n_chunks} chunks were done",
              flush=True)
    bar = tqdm(total=n, initial=n - sum(min(chunk_items, n - c * chunk_items) for c in todo),
               desc=f"decoding images ({workers} processes)", unit="img", disable=not progress)
    start, last_write = time.perf_counter(), 0.0

    def finished(c: int, count: int) -> None:
        nonlocal last_write
        done[c] = True
        stats["decoded"] += count
        bar.update(count)
        if time.perf_counter() - last_write >= DONE_EVERY_S:   # a killed run redoes at most these seconds' chunks
            _write_done(folder, done)
            last_write = time.perf_counter()

    def failed(exc: BaseException) -> DatasetError:
        if not done.any():   # nothing to resume: leave nothing behind
            shutil.rmtree(folder, ignore_errors=True)
            return DatasetError(f"{_with_origin(exc)}" if isinstance(exc, DatasetError)
                                else f"decoding into {folder} failed: {type(exc).__name__}: {exc}")
        _write_done(folder, done)
        if isinstance(exc, DatasetError):
            return DatasetError(f"{_with_origin(exc)}; the {int(done.sum())} chunks decoded so far are kept "
                                f"in {folder}: rerunning 00_data resumes there")
        return DatasetError(f"decoding into {folder} failed: {type(exc).__name__}: {exc}; rerunning "
                            f"00_data resumes where it stopped")

    def _with_origin(exc: DatasetError) -> str:
        item = getattr(exc, "item", None)
        return f"{exc}" + (f" (item {item} comes from {origin(item)})" if origin and item is not None else "")

    try:
        if workers == 1 or len(todo) <= 1:
            _init_worker(images, str(pixels_path), offset)
            for c in todo:
                try:
                    count = _decode_chunk(c * chunk_items, min(n, (c + 1) * chunk_items))
                except Exception as exc:
                    raise failed(_with_item(exc)) from None
                finished(c, count)
        else:
            with ProcessPoolExecutor(workers, initializer=_init_worker,
                                     initargs=(images, str(pixels_path), offset)) as pool:
                pending = {pool.submit(_decode_chunk, c * chunk_items, min(n, (c + 1) * chunk_items)): c
                           for c in todo}
                while pending:
                    ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in ready:
                        c = pending.pop(future)
                        exc = future.exception()
                        if exc is not None:
                            for other in pending:
                                other.cancel()
                            raise failed(_with_item(exc)) from None
                        finished(c, future.result())
    except DatasetError:
        raise
    except BaseException:   # Ctrl-C in a notebook: keep what is done (a SIGKILL keeps the last second's)
        _write_done(folder, done)
        raise
    finally:
        bar.close()
        stats["seconds"] = time.perf_counter() - start
    _write_done(folder, done)
    _write_info(folder, {**want, "complete": True, "decode_seconds": round(stats["seconds"], 2),
                         "workers": workers})
    return open_store(folder)


def _with_item(exc: BaseException) -> BaseException:
    """The item number a FileImages error names ("... of item 12 ..."), kept on the exception."""
    match = re.search(r"item (\d+)", str(exc))
    if isinstance(exc, DatasetError) and match:
        exc.item = int(match.group(1))
    return exc
