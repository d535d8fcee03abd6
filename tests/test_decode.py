"""Decode once (fndkit.data.decode), the 00_data store, and the training prefetch (fndkit.feeding).

A tiny generated release (fndkit.data.release_fixture, 40 JPEGs of 291 px) is decoded into the
store: its pixels must equal what the on-demand reader (FileImages) decodes, a decode killed after
some chunks must resume with exactly the chunks left, a corrupt JPEG must be named, and a store of
another image size or release must be refused. Prefetched training must equal plain training.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from fndkit import stages
from fndkit.config import ConfigError, DataConfig, TrainConfig
from fndkit.data import decode as decode_module
from fndkit.data.decode import decode_store, is_complete_store, release_fingerprint
from fndkit.data.images import FileImages
from fndkit.data.polyvore import read_polyvore_u
from fndkit.feeding import PrefetchedImages, batch_item_ids, prefetch_images
from fndkit.data.release_fixture import image_name, write_release
from fndkit.data.schema import ArrayImages, DatasetError
from fndkit.models.contract import make_image_fn
from fndkit.objectives import TrainBatch, make_objective
from fndkit.train import build_model, fit

N_ITEMS, SIZE = 40, 24


@pytest.fixture(scope="module")
def release_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "polyvore"
    write_release(root, N_ITEMS, n_users=4, workers=1, progress=False)
    return root


@pytest.fixture
def release(release_root, tmp_path):
    """A private copy (tests corrupt files)."""
    root = tmp_path / "polyvore"
    shutil.copytree(release_root, root)
    return root


def files_of(root, size=SIZE) -> FileImages:
    return read_polyvore_u(root, "630", image_size=size).images


def test_fixture_is_a_release_the_reader_reads(release_root):
    record = json.loads((release_root / "FIXTURE.json").read_text())
    ds = read_polyvore_u(release_root, "630", image_size=SIZE)
    assert ds.n_items == N_ITEMS == record["items"] and len(ds.trained_users) == 4
    assert ds.images.names[0] == image_name(0) and len(image_name(0)) == 44   # sha1 hex + .jpg
    assert len(ds.candidates["test/random"]) == 11 * len(ds.outfits_of("test"))
    # written again with the same arguments: reused as it is
    assert write_release(release_root, N_ITEMS, n_users=4, workers=1, progress=False) == record


@pytest.mark.parametrize("workers", [1, 2])
def test_store_holds_what_the_files_decode_to(release, tmp_path, workers):
    files = files_of(release)
    stats = {}
    pixels = decode_store(files, tmp_path / "store", workers=workers, chunk_items=16, progress=False,
                          stats=stats)
    assert pixels.shape == (N_ITEMS, SIZE, SIZE, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, files.get(np.arange(N_ITEMS)))
    assert stats["decoded"] == N_ITEMS and stats["workers"] == workers
    assert is_complete_store(tmp_path / "store")
    # a second call opens the finished store, decoding nothing
    again = {}
    decode_store(files, tmp_path / "store", workers=workers, chunk_items=16, progress=False, stats=again)
    assert again["decoded"] == 0


def test_killed_decode_resumes_with_the_chunks_left(release, tmp_path, monkeypatch):
    files, store = files_of(release), tmp_path / "store"
    calls = []
    real = decode_module._decode_chunk

    def dies_on_the_third_chunk(lo, hi):
        calls.append(lo)
        if len(calls) == 3:
            raise KeyboardInterrupt   # what a kill mid-chunk looks like to the chunk
        return real(lo, hi)

    monkeypatch.setattr(decode_module, "_decode_chunk", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        decode_store(files, store, workers=1, chunk_items=8, progress=False)
    assert not is_complete_store(store)
    np.testing.assert_array_equal(np.load(store / "done.npy"), [True, True, False, False, False])
    monkeypatch.setattr(decode_module, "_decode_chunk", lambda lo, hi: (calls.append(lo), real(lo, hi))[1])
    calls.clear()
    stats = {}
    pixels = decode_store(files, store, workers=1, chunk_items=8, progress=False, stats=stats)
    assert calls == [16, 24, 32] and stats["resumed"] and stats["decoded"] == 24
    np.testing.assert_array_equal(pixels, files.get(np.arange(N_ITEMS)))


def test_parallel_decode_marks_chunks_done_as_they_finish(release, tmp_path, monkeypatch):
    """What a SIGKILL leaves is the last done.npy written: with several processes it must grow
    chunk by chunk, not appear only at the end."""
    snapshots = []
    real = decode_module._write_done
    monkeypatch.setattr(decode_module, "DONE_EVERY_S", 0.0)
    monkeypatch.setattr(decode_module, "_write_done", lambda folder, done: (snapshots.append(int(done.sum())),
                                                                           real(folder, done))[1])
    decode_store(files_of(release), tmp_path / "store", workers=2, chunk_items=8, progress=False)
    assert snapshots[0] == 0 and snapshots[-1] == 5
    assert sorted(set(snapshots)) == [0, 1, 2, 3, 4, 5]


def test_corrupt_jpeg_is_named_and_the_store_stays_unfinished(release, tmp_path):
    files = files_of(release)
    bad = 21
    path = files.root / files.names[bad]
    path.write_bytes(path.read_bytes()[:300])   # truncated
    with pytest.raises(DatasetError, match=rf"item {bad} \({path}\).*corrupt or truncated.*"
                                           rf"line \d+ of .*image_list"):
        decode_store(files, tmp_path / "store", workers=2, chunk_items=8, progress=False,
                     origin=lambda item: f"line {item + 1} of image_list_top")
    assert not is_complete_store(tmp_path / "store")
    if (tmp_path / "store").exists():   # chunks done before the bad one are kept for the rerun
        done = np.load(tmp_path / "store" / "done.npy")
        assert done.any() and not done[bad // 8]


def test_a_failure_before_any_chunk_leaves_nothing_behind(release, tmp_path):
    files = files_of(release)
    path = files.root / files.names[2]
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"item 2 .*corrupt or truncated"):
        decode_store(files, tmp_path / "store", workers=1, chunk_items=8, progress=False)
    assert not (tmp_path / "store").exists()


def test_store_of_another_size_or_release_is_refused_by_name(release, tmp_path):
    store = tmp_path / "store"
    decode_store(files_of(release), store, chunk_items=16, workers=1, progress=False)
    with pytest.raises(DatasetError, match=r"another image size \(image_size 24 there, 32 here"):
        decode_store(files_of(release, size=32), store, chunk_items=16, workers=1, progress=False)
    files = files_of(release)
    listed = release / "tuples_630" / "image_list_top"
    os.rename(files.root / files.names[3], files.root / "another.jpg")   # another image in the list
    listed.write_text(listed.read_text().replace(files.names[3], "another.jpg"))
    files = files_of(release)
    assert release_fingerprint(files) != json.loads((store / "store.json").read_text())["release"]
    with pytest.raises(DatasetError, match=rf"another release \(release .*; delete {store}"):
        decode_store(files, store, chunk_items=16, workers=1, progress=False)


def test_short_disk_is_refused_before_decoding(release, tmp_path, monkeypatch):
    monkeypatch.setattr(decode_module.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 1000))
    with pytest.raises(DatasetError, match=r"needs 0.00 GB .* set decode='on_the_fly'"):
        decode_store(files_of(release), tmp_path / "store", workers=1, progress=False)
    assert not (tmp_path / "store").exists()


@pytest.mark.filterwarnings("ignore:the released split breaks")
def test_00_data_decodes_once_and_links_the_store(release, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = DataConfig(source=str(release), subset="630", image_size=SIZE)
    ds = stages.prepare_data(run_dir, cfg)
    printed = capsys.readouterr().out
    assert f"decoding {N_ITEMS} images once at {SIZE} px" in printed and "GB free" in printed
    assert isinstance(ds.images, ArrayImages)
    np.testing.assert_array_equal(ds.images.get(np.arange(N_ITEMS)), files_of(release).get(np.arange(N_ITEMS)))
    data_file, store_file = run_dir / "data" / "images.npy", run_dir / "decoded_images" / "images.npy"
    assert os.path.samefile(data_file, store_file)   # linked, not copied
    assert ds.meta["decoded_store"]["release"] == release_fingerprint(files_of(release))
    # on the fly: the files, decoded at every step
    lazy = stages.prepare_data(tmp_path / "lazy", DataConfig(source=str(release), subset="630", image_size=SIZE,
                                                             decode="on_the_fly"))
    assert isinstance(lazy.images, FileImages) and not (tmp_path / "lazy" / "decoded_images").exists()
    assert lazy.fingerprint() == ds.fingerprint()
    # another size over the same run folder: overwrite decodes again
    small = stages.prepare_data(run_dir, DataConfig(source=str(release), subset="630", image_size=16), overwrite=True)
    assert small.image_size == 16 and small.images.get(np.arange(2)).shape == (2, 16, 16, 3)
    with pytest.raises(ConfigError, match="decode='sometimes' is unknown"):
        DataConfig(decode="sometimes")


# --------------------------------------------------------------------------------------------
# prefetch


def test_prefetched_image_fn_equals_the_plain_one(tiny):
    plain = make_image_fn(tiny.images, 20, "cpu")
    ids = np.array([3, 7, 11, 40])
    pixels = torch.from_numpy(tiny.images.get(ids))
    fn = PrefetchedImages(ids, pixels, tiny.images, 20, "cpu")
    for ask in ([11, 3], [7, 7, 40], [5, 11, 99, 3], []):
        ask = np.asarray(ask, dtype=np.int64)
        assert torch.equal(fn(ask), plain(ask))


def test_prefetch_keeps_order_and_ids(tiny):
    batches = [TrainBatch(torch.zeros(2), np.array([[k, k + 1, -1]]), np.array([[k + 5, -1, k]]),
                          None, 0, k) for k in range(5)]
    out = list(prefetch_images(iter(batches), tiny.images, None, "cpu", depth=2))
    assert [b.step for b in out] == list(range(5))
    for k, b in enumerate(out):
        np.testing.assert_array_equal(batch_item_ids(b), [k, k + 1, k + 5])
        np.testing.assert_array_equal(b.image_fn(np.array([k + 5])).numpy(),
                                      make_image_fn(tiny.images, None, "cpu")(np.array([k + 5])).numpy())


def test_fit_with_prefetch_equals_fit_without(tiny, tmp_path):
    cfg = TrainConfig(backbone="cnn-small", dim=16, heads=2, epochs=2, batch_size=8, max_steps_per_epoch=3,
                      device="cpu", lam=0.2, augmentations="erase,replace")
    weights = {}
    for prefetch in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, tiny)
        neighbours = np.random.default_rng(0).integers(0, tiny.n_items, (tiny.n_items, 3))
        for c in range(3):   # replace within a category
            ids = np.flatnonzero(tiny.item_category == c)
            neighbours[ids] = np.random.default_rng(c).choice(ids, (len(ids), 3))
        result = fit(model, tiny, cfg, tmp_path / str(prefetch), make_objective(cfg, neighbours=neighbours),
                     progress=False, prefetch=prefetch)
        weights[prefetch] = (model.state_dict(), [h["loss"] for h in result["history"]])
    assert weights[False][1] == weights[True][1]
    for key, value in weights[False][0].items():
        assert torch.equal(value, weights[True][0][key]), key


@pytest.mark.filterwarnings("ignore:the released split breaks")
def test_00_data_names_a_corrupt_jpeg_by_its_list_line_and_reads_it_once_fixed(release, tmp_path):
    files = files_of(release)
    bad = 30   # the list of tops holds items 0..13, bottoms 14..26, shoes 27..39
    path = files.root / files.names[bad]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    cfg = DataConfig(source=str(release), subset="630", image_size=SIZE)
    list_file = release / "tuples_630" / "image_list_shoe"
    with pytest.raises(DatasetError, match=rf"item {bad} \({path}\).*corrupt or truncated.*"
                                           rf"line {bad - 27 + 1} of {list_file}"):
        stages.prepare_data(tmp_path / "run", cfg)
    assert not (tmp_path / "run" / "data").exists()
    assert not (tmp_path / "run" / "decoded_images").exists()   # one chunk, none done: nothing left
    path.write_bytes(good)
    ds = stages.prepare_data(tmp_path / "run", cfg)
    np.testing.assert_array_equal(ds.images.get(np.arange(N_ITEMS)), files.get(np.arange(N_ITEMS)))
