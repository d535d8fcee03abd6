"""01_autoencoder: the CNN autoencoder and the per-category latent neighbour table *replace* uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..config import check_int
from ..artifacts import atomic_path, save_checkpoint
from ..models import autoencoder as ae
from ..repro import resolve_device, seed_everything
from ..rundir import AUTOENCODER, RunFolder
from .params import StageParams


@dataclass(frozen=True)
class Params(StageParams):
    """notebooks/01_autoencoder's parameters cell."""

    kind: ClassVar[str] = "autoencoder"
    notebook: ClassVar[str] = "01_autoencoder"

    run_dir: str = "outputs/demo"
    latent_dim: int = 64
    epochs: int = 10
    k_neighbours: int = 5
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False


def execute(params: Params, progress: bool = True) -> dict:
    """01_autoencoder for ``params`` (see :func:`run`)."""
    return run(params.run_dir, latent_dim=params.latent_dim, epochs=params.epochs,
               k_neighbours=params.k_neighbours, seed=params.seed, device=params.device,
               overwrite=params.overwrite, progress=progress)


def run(run_dir: str | os.PathLike, latent_dim: int = 64, epochs: int = 10, k_neighbours: int = 5,
        batch_size: int = 128, lr: float = 1e-3, seed: int = 0, device: str = "auto",
        overwrite: bool = False, progress: bool = True, claim_timeout: float | None = None) -> dict:
    """Train the CNN autoencoder on the training items and build the *replace* neighbour table.

    Only items of training outfits are encoded into the neighbour pool (a view never pulls in a
    validation or test item); 10% of them are held out for the reconstruction error. Writes
    ``checkpoint.pt``, ``latents.npy`` (rows of ``pool_items.npy``), ``neighbours.npy`` [I, k]
    (global item ids, -1 outside the pool) and ``metrics.json``. ``claim_timeout``: how long to
    wait while another process trains this stage (None: as long as it trains; see fndkit.rundir).
    """
    for name, value in (("latent_dim", latent_dim), ("epochs", epochs), ("k_neighbours", k_neighbours)):
        check_int(name, value, 1)
    check_int("seed", seed, 0)
    device = resolve_device(device)  # checked before anything is written
    run = RunFolder(run_dir)
    ds = run.dataset()
    out = run.stage_dir(AUTOENCODER)
    config = {"latent_dim": latent_dim, "epochs": epochs, "k_neighbours": k_neighbours,
              "batch_size": batch_size, "lr": lr, "seed": seed, "dataset_fingerprint": ds.fingerprint()}
    _, finished = run.begin_stage(AUTOENCODER, config, overwrite=overwrite, claim_timeout=claim_timeout,
                                  requires=("checkpoint.pt", "neighbours.npy"))
    if finished is not None:
        return finished
    try:
        rng = seed_everything(seed)
        train_items = ds.outfit_items[ds.outfits_of("train")]
        pool = np.unique(train_items[train_items >= 0])
        held_out = rng.random(pool.size) < 0.1
        model = ae.ConvAutoencoder(image_size=ds.image_size, latent_dim=latent_dim)
        history = ae.train_autoencoder(model, ds.images, pool[~held_out], pool[held_out], epochs=epochs,
                                       batch_size=batch_size, lr=lr, seed=seed, device=device, progress=progress)
        latents = ae.encode_items(model, ds.images, pool, device=device)
        local = ae.neighbour_table(latents, ds.item_category[pool], k=k_neighbours)
        neighbours = np.full((ds.n_items, k_neighbours), -1, dtype=np.int64)
        neighbours[pool] = np.where(local >= 0, pool[np.maximum(local, 0)], -1)
        metrics = {"reconstruction_mse_held_out": ae.reconstruction_error(model, ds.images, pool[held_out], device=device),
                   "reconstruction_mse_train": history[-1]["train_mse"], "pool_items": int(pool.size),
                   "held_out_items": int(held_out.sum()), "history": history}
        if ds.item_attributes:
            attrs = {k: v[pool] for k, v in ds.item_attributes.items()}
            metrics["attribute_agreement"] = ae.attribute_agreement(local, attrs, ds.item_category[pool], seed=seed)
        save_checkpoint(out / "checkpoint.pt", state_dict=model.state_dict(),
                        config={"model": model.config(), **config}, metrics={k: v for k, v in metrics.items() if k != "history"})
        for name, arr in (("latents.npy", latents), ("pool_items.npy", pool), ("neighbours.npy", neighbours)):
            with atomic_path(out / name) as tmp:
                np.save(tmp, arr)  # tmp ends in .npy, so np.save writes exactly there
        run.write_metrics(AUTOENCODER, metrics)
        return metrics
    finally:
        run.end_stage(AUTOENCODER)  # another process asking for this stage waits until here
