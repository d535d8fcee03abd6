"""What each notebook does, as library calls: prepare the data, train a stage, record its metrics.

Notebooks stay thin (parameters, a few calls, pictures); everything here is testable without a
kernel. A stage folder (``run_dir/teacher`` …) is finished when its ``metrics.json`` exists; a
finished stage is reused when asked again with the same config and never silently overwritten
when asked with another one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .artifacts import jsonable, read_json, write_json
from .config import DataConfig, TrainConfig, train_config
from .data.schema import DatasetError, OutfitDataset


class StageError(RuntimeError):
    """A run folder is missing a stage, or holds a different finished one; the message says what to do."""


# --------------------------------------------------------------------------------------------
# 00_data


def build_dataset(cfg: DataConfig) -> OutfitDataset:
    """Generate (synthetic) or read (Polyvore-U) the dataset and attach fixed evaluation candidates."""
    from .data.sampling import attach_candidates, check_split_invariants

    if cfg.source == "synthetic":
        from .data.synthetic import make_dataset

        ds = make_dataset(scale=cfg.scale, seed=cfg.seed, variable_size=cfg.variable_size,
                          image_size=cfg.image_size)
    else:
        from .data.polyvore import read_polyvore_u

        root = Path(cfg.source).expanduser()
        if not root.is_dir():
            raise DatasetError(f"source={cfg.source!r} is neither 'synthetic' nor an existing folder; "
                               f"point it at a Polyvore-U root (holding images/ and tuples_630/ …)")
        cold = cfg.cold_subset
        if cold is None:
            guess = {"630": "53", "519": "32"}.get(str(cfg.subset))
            cold = guess if guess and (root / f"tuples_{guess}").is_dir() else None
        ds = read_polyvore_u(root, subset=str(cfg.subset), image_size=cfg.image_size, cold_subset=cold)
    attach_candidates(ds, seed=cfg.seed, ratio=cfg.candidate_ratio)
    ds.meta = {**ds.meta, "data_config": cfg.to_dict()}
    ds.validate()
    try:
        check_split_invariants(ds)
    except DatasetError as exc:
        if cfg.source == "synthetic":  # the generator guarantees it: a break here is a bug
            raise
        # a real release is kept as distributed; say so loudly rather than refuse the data
        import warnings

        warnings.warn(f"the released split breaks an invariant of paper §4.1.1: {exc}", stacklevel=2)
    return ds


def prepare_data(run_dir: str | Path, cfg: DataConfig, overwrite: bool = False) -> OutfitDataset:
    """Write the canonical dataset into ``run_dir/data`` (atomically) and return it.

    An existing dataset built from the same config is reused; a different one stops with a clear
    message unless ``overwrite``.
    """
    target = Path(run_dir) / "data"
    if (target / "dataset.json").exists():
        old = read_json(target / "dataset.json")
        same = old.get("meta", {}).get("data_config") == jsonable(cfg.to_dict())
        if same and not overwrite:
            return OutfitDataset.load(target)
        if not overwrite:
            raise StageError(
                f"{target} already holds dataset {old.get('name')!r} built with "
                f"{old.get('meta', {}).get('data_config')}; use another run_dir, or pass "
                f"overwrite=True to replace it (and retrain everything after it)")
    ds = build_dataset(cfg)
    ds.save(target)
    return OutfitDataset.load(target)


def load_run_dataset(run_dir: str | Path) -> OutfitDataset:
    """The dataset 00_data wrote into ``run_dir``, or a clear error saying to run 00_data first."""
    target = Path(run_dir) / "data"
    if not (target / "dataset.json").exists():
        raise StageError(f"{run_dir} has no data/ folder; run notebooks/00_data.ipynb with "
                         f"run_dir={str(run_dir)!r} first")
    return OutfitDataset.load(target)


def data_summary(ds: OutfitDataset, seed: int = 0) -> dict:
    """Statistics (Table 1 layout) and, for synthetic data, the measured false-negative fraction."""
    out = {"stats": ds.stats(), "fingerprint": ds.fingerprint(),
           "candidates": {k: {"rows": len(c), "positives": int(c.label.sum())} for k, c in ds.candidates.items()}}
    if ds.truth is not None:
        cand = ds.candidates.get("test/random")
        if cand is not None:
            neg = cand.label == 0
            fn = ds.truth.is_false_negative(cand.user[neg], cand.items[neg])
            out["false_negative_fraction_test_candidates"] = float(fn.mean())
        out["false_negative_threshold"] = float(ds.truth.false_negative_threshold)
        from .data.synthetic import false_negative_fraction

        out["false_negative_fraction_random_mixtures"] = float(false_negative_fraction(ds, seed=seed))
    return out


def affinity_table(ds: OutfitDataset, split: str = "test", protocol: str = "random"):
    """True affinity of each candidate for its user (synthetic only) as a DataFrame."""
    import pandas as pd

    cand = ds.candidate_set(split, protocol)
    aff = ds.truth.true_affinity(cand.user, cand.items)
    kind = np.where(cand.label == 1, "positive", "random-mixture negative")
    return pd.DataFrame({"user": cand.user, "true_affinity": aff, "kind": kind})


# --------------------------------------------------------------------------------------------
# 02_teacher / 03_student / 04_contrastive


def stage_status(stage_dir: Path, config: dict) -> str:
    """'new', 'finished-same' (reuse), 'finished-other' (refuse), or 'partial' (resume)."""
    if (stage_dir / "metrics.json").exists():
        old = read_json(stage_dir / "config.json") if (stage_dir / "config.json").exists() else None
        return "finished-same" if old == jsonable(config) else "finished-other"
    return "partial" if (stage_dir / "last.pt").exists() else "new"


def train_stage(run_dir: str | Path, stage: str, cfg: TrainConfig, teacher_dir: str | Path | None = None,
                autoencoder_dir: str | Path | None = None, overwrite: bool = False,
                progress: bool = True, callbacks=()) -> dict:
    """Train (or reuse) one model into ``run_dir/stage`` and return its metrics.

    Writes ``config.json``, ``checkpoint.pt`` (best by validation AUC), ``history.json``,
    ``metrics.json`` (test metrics for the random and the hard protocol, parameter count, seconds
    per epoch, FND flag statistics).
    """
    from .artifacts import load_checkpoint
    from .models.backbones import count_parameters
    from .repro import resolve_device, seed_everything
    from .train import build_model, check_teacher_compatible, fit, load_model, prepare_teacher
    from .evaluate import evaluate

    run_dir = Path(run_dir)
    ds = load_run_dataset(run_dir)
    stage_dir = run_dir / stage
    config = {"stage": stage, "train": cfg.to_dict(),
              "teacher_dir": str(teacher_dir) if teacher_dir else None,
              "autoencoder_dir": str(autoencoder_dir) if autoencoder_dir else None,
              "dataset_fingerprint": ds.fingerprint()}
    status = stage_status(stage_dir, config)
    if status == "finished-same" and not overwrite:
        print(f"{stage_dir} already holds a finished run with this config; reusing it "
              f"(pass overwrite=True to retrain)")
        return read_json(stage_dir / "metrics.json")
    if status == "finished-other" and not overwrite:
        raise StageError(f"{stage_dir} holds a finished run with another config; pass a new "
                         f"out_name, or overwrite=True to replace it")
    if overwrite and stage_dir.exists():
        shutil.rmtree(stage_dir)
    device = resolve_device(cfg.device)
    teacher = None
    if cfg.loss == "fnd":
        teacher_dir = Path(teacher_dir or run_dir / "teacher")
        payload = load_checkpoint(teacher_dir / "checkpoint.pt")
        check_teacher_compatible(payload, ds, cfg.dim, teacher_dir)
        teacher_model, _ = load_model(teacher_dir / "checkpoint.pt", device=device)
        teacher = prepare_teacher(teacher_model, ds, split=cfg.train_split, device=device)
    neighbours = None
    if cfg.lam > 0 and "replace" in cfg.augmentations:
        ae_dir = Path(autoencoder_dir or run_dir / "autoencoder")
        if not (ae_dir / "neighbours.npy").exists():
            raise StageError(f"augmentation 'replace' needs {ae_dir / 'neighbours.npy'}; run "
                             f"notebooks/01_autoencoder.ipynb on this run_dir first")
        neighbours = np.load(ae_dir / "neighbours.npy")
    seed_everything(cfg.seed)
    model = build_model(cfg, ds)
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_json(stage_dir / "config.json", config)
    result = fit(model, ds, cfg, stage_dir, teacher=teacher, neighbours=neighbours,
                 resume=(status == "partial"), progress=progress, callbacks=callbacks)
    test = evaluate(model, ds, split="test", device=device)
    n_params = count_parameters(model)
    metrics = {"stage": stage, "loss": cfg.loss, "backbone": cfg.backbone, "params": n_params,
               "params_inference": n_params - (count_parameters(model.projection)
                                               if getattr(model, "projection", None) is not None else 0),
               "test": test, "best_epoch": result["best_epoch"], "best_val_auc": result["best_val_auc"],
               "epochs_run": len(result["history"]), "epoch_seconds": result["epoch_seconds"],
               "stopped_early": result["stopped_early"], "device": device}
    if cfg.loss == "fnd":
        last = result["history"][-1]
        for key in ("flagged_fraction", "flag_precision", "flag_recall", "true_fn_fraction"):
            if key in last:
                metrics[key] = float(np.mean([h[key] for h in result["history"]]))
    write_json(stage_dir / "metrics.json", metrics)
    return metrics


def student_config(run_dir: str | Path, **params) -> TrainConfig:
    """A student TrainConfig from notebook parameters and the run folder's scale preset."""
    return train_config(_run_scale(run_dir), "student", **params)


def teacher_config(run_dir: str | Path, **params) -> TrainConfig:
    return train_config(_run_scale(run_dir), "teacher", **params)


def _run_scale(run_dir: str | Path) -> str:
    desc = Path(run_dir) / "data" / "dataset.json"
    if not desc.exists():
        raise StageError(f"{run_dir} has no data/ folder; run notebooks/00_data.ipynb first")
    meta = read_json(desc).get("meta", {})
    if meta.get("source") != "synthetic":
        return "real" if meta.get("image_size", 32) >= 128 else "polyvore630"
    return meta.get("scale", "demo")


def default_student_name(loss: str, alpha: float) -> str:
    """``student_<loss>`` for the paper's defaults; hyper-parameters appended otherwise."""
    name = f"student_{loss}"
    if loss == "fnd" and alpha != 1.25:
        name += f"-alpha{alpha:g}"
    return name


def default_contrastive_name(pair: tuple[str, str], lam: float, alpha: float, loss: str = "fnd") -> str:
    """``contrastive`` for the paper's defaults ((erase, replace), λ = 0.2, α = 1.25, FND)."""
    name = "contrastive"
    if tuple(pair) != ("erase", "replace"):
        name += "-" + "-".join(pair)
    if lam != 0.2:
        name += f"-lam{lam:g}"
    if loss != "fnd":
        name += f"-{loss}"
    elif alpha != 1.25:
        name += f"-alpha{alpha:g}"
    return name


def cold_start_markdown(result: dict, n_interactions=(1, 5)) -> str:
    """The Table-3 section of report.md."""
    from .coldstart import table3
    from .report import markdown_table

    table = table3(result, n_interactions).reset_index()
    table.columns = [str(c) if not isinstance(c, (int, float)) else f"{c} outfit(s)" for c in table.columns]
    return (f"## Cold start (AUC ×100, mean ± std over {result['repetitions']} repetitions, "
            f"{result['cold_users']} cold users)\n\n" + markdown_table(table))


def history_figure(history: list[dict], title: str):
    """Training curve: loss and validation AUC per epoch (plotly)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = [h["epoch"] for h in history]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=epochs, y=[h["loss"] for h in history], name="train loss"))
    fig.add_trace(go.Scatter(x=epochs, y=[h["val_auc"] for h in history], name="val AUC"), secondary_y=True)
    if "flagged_fraction" in history[0]:
        fig.add_trace(go.Scatter(x=epochs, y=[h["flagged_fraction"] for h in history],
                                 name="flagged false negatives", line={"dash": "dot"}), secondary_y=True)
    fig.update_layout(title=title, xaxis_title="epoch", height=380)
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="AUC / fraction", secondary_y=True)
    return fig


PNG_TIMEOUT_S = 90

_PNG_EXPORT = """
import sys
import plotly.io as pio
fig = pio.from_json(open(sys.argv[1]).read())
fig.write_image(sys.argv[2], format="png")
"""


def save_figure(fig, path_stem: str | Path, png: bool = True) -> list[Path]:
    """Write ``<stem>.html`` (self-contained) and, where Chromium is installed, ``<stem>.png``.

    The PNG is rendered by kaleido's headless Chromium in a child process with a time limit
    (``PNG_TIMEOUT_S``): we saw that browser hang once with two exports running at the same time,
    and a picture must never stall a training chain. ``FNDKIT_PNG=0`` turns PNG export off.
    """
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    from .artifacts import atomic_path

    path_stem = Path(path_stem)
    written = []
    with atomic_path(path_stem.with_suffix(".html")) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True)
    written.append(path_stem.with_suffix(".html"))
    if not (png and shutil.which("chromium") and os.environ.get("FNDKIT_PNG", "1") != "0"):
        return written
    target = path_stem.with_suffix(".png")
    with tempfile.TemporaryDirectory() as scratch:
        spec, rendered = Path(scratch) / "figure.json", Path(scratch) / "figure.png"
        spec.write_text(fig.to_json())
        proc = subprocess.Popen([sys.executable, "-c", _PNG_EXPORT, str(spec), str(rendered)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own group: Chromium's children die with it
        try:
            _, err = proc.communicate(timeout=PNG_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            err = f"no PNG after {PNG_TIMEOUT_S} s"
        if proc.returncode == 0 and rendered.exists():
            with atomic_path(target) as tmp:
                shutil.copyfile(rendered, tmp)
            written.append(target)
        else:  # the HTML is the artifact; the PNG is a convenience
            last = (err or "").strip().splitlines()[-1:] or ["unknown error"]
            print(f"PNG export of {path_stem.name} skipped: {last[0]}")
    return written


# --------------------------------------------------------------------------------------------
# 01_autoencoder


def run_autoencoder(run_dir: str | Path, latent_dim: int = 64, epochs: int = 10, k_neighbours: int = 5,
                    batch_size: int = 128, lr: float = 1e-3, seed: int = 0, device: str = "auto",
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Train the CNN autoencoder on the training items and build the *replace* neighbour table.

    Only items of training outfits are encoded into the neighbour pool (a view never pulls in a
    validation or test item); 10% of them are held out for the reconstruction error. Writes
    ``checkpoint.pt``, ``latents.npy`` (rows of ``pool_items.npy``), ``neighbours.npy`` [I, k]
    (global item ids, -1 outside the pool) and ``metrics.json``.
    """
    from .artifacts import atomic_path, save_checkpoint
    from .models import autoencoder as ae
    from .repro import resolve_device, seed_everything

    for name, value, low in (("latent_dim", latent_dim, 1), ("epochs", epochs, 1), ("k_neighbours", k_neighbours, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    run_dir = Path(run_dir)
    ds = load_run_dataset(run_dir)
    out = run_dir / "autoencoder"
    config = {"latent_dim": latent_dim, "epochs": epochs, "k_neighbours": k_neighbours,
              "batch_size": batch_size, "lr": lr, "seed": seed, "dataset_fingerprint": ds.fingerprint()}
    status = stage_status(out, config)
    if status == "finished-same" and not overwrite:
        print(f"{out} already holds a finished autoencoder with this config; reusing it")
        return read_json(out / "metrics.json")
    if status == "finished-other" and not overwrite:
        raise StageError(f"{out} holds an autoencoder trained with another config; pass overwrite=True")
    device = resolve_device(device)
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
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "checkpoint.pt", state_dict=model.state_dict(),
                    config={"model": model.config(), **config}, metrics={k: v for k, v in metrics.items() if k != "history"})
    for name, arr in (("latents.npy", latents), ("pool_items.npy", pool), ("neighbours.npy", neighbours)):
        with atomic_path(out / name) as tmp:
            np.save(tmp, arr)  # tmp ends in .npy, so np.save writes exactly there
    write_json(out / "config.json", config)
    write_json(out / "metrics.json", metrics)
    return metrics


def reconstruction_figure(run_dir: str | Path, n: int = 8, seed: int = 0):
    """Originals (top row) against reconstructions (bottom row) for held-out-like random items."""
    import plotly.express as px
    import torch

    from .models import autoencoder as ae
    from .artifacts import load_checkpoint

    ds = load_run_dataset(run_dir)
    payload = load_checkpoint(Path(run_dir) / "autoencoder" / "checkpoint.pt")
    model = ae.ConvAutoencoder.from_config(payload["config"]["model"])
    model.load_state_dict(payload["state_dict"])
    pool = np.load(Path(run_dir) / "autoencoder" / "pool_items.npy")
    ids = np.random.default_rng(seed).choice(pool, size=min(n, pool.size), replace=False)
    with torch.no_grad():
        recon = model.eval()(ae.images_to_tensor(ds.images.get(ids)))
    recon = (recon.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    grid = np.concatenate([np.concatenate(list(ds.images.get(ids)), axis=1), np.concatenate(list(recon), axis=1)], axis=0)
    fig = px.imshow(grid, title="Items (top) and their reconstructions (bottom)")
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    return fig


def neighbours_figure(run_dir: str | Path, n_queries: int = 5, seed: int = 0):
    """For a few items (left column), their k latent neighbours of the same category."""
    import plotly.express as px

    from .viz.pictures import outfit_strip

    ds = load_run_dataset(run_dir)
    neighbours = np.load(Path(run_dir) / "autoencoder" / "neighbours.npy")
    pool = np.load(Path(run_dir) / "autoencoder" / "pool_items.npy")
    queries = np.random.default_rng(seed).choice(pool, size=min(n_queries, pool.size), replace=False)
    rows = np.concatenate([queries[:, None], neighbours[queries]], axis=1)
    fig = px.imshow(outfit_strip(ds, rows), title="Query item (left) and its latent neighbours")
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    return fig
