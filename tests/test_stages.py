"""Stage orchestration: datasets and finished stages are reused with the same config, refused with
another; the cold-start experiment and the autoencoder stage run on a tiny run folder."""

import json

import numpy as np
import pytest

from fndkit import stages
from fndkit.stages.cold_start import run as run_cold_start, table3
from fndkit.viz import figures
from fndkit.config import DataConfig


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_tiny_run_folder):
    run = make_tiny_run_folder(tmp_path_factory.mktemp("stages") / "run")
    cfg = stages.teacher_config(run, epochs=1, max_steps_per_epoch=4, dim=16, heads=2, device="cpu")
    stages.train_stage(run, "teacher", cfg, progress=False)
    return run


def test_prepare_data_reuses_same_and_refuses_other(run_dir):
    before = (run_dir / "data" / "dataset.json").stat().st_mtime_ns
    ds = stages.prepare_data(run_dir, DataConfig(scale="tiny", seed=0))
    assert (run_dir / "data" / "dataset.json").stat().st_mtime_ns == before
    assert ds.name == "synthetic-tiny"
    with pytest.raises(stages.StageError, match="already holds dataset 'synthetic-tiny'"):
        stages.prepare_data(run_dir, DataConfig(scale="tiny", seed=1))


def test_finished_stage_reused_with_same_config_refused_with_other(run_dir):
    cfg = stages.teacher_config(run_dir, epochs=1, max_steps_per_epoch=4, dim=16, heads=2, device="cpu")
    before = (run_dir / "teacher" / "checkpoint.pt").stat().st_mtime_ns
    metrics = stages.train_stage(run_dir, "teacher", cfg, progress=False)
    assert (run_dir / "teacher" / "checkpoint.pt").stat().st_mtime_ns == before
    assert metrics == json.loads((run_dir / "teacher" / "metrics.json").read_text())
    with pytest.raises(stages.StageError, match="another config"):
        stages.train_stage(run_dir, "teacher", cfg.replace(lr=0.02), progress=False)


def test_incompatible_teacher_is_named(run_dir):
    cfg = stages.student_config(run_dir, loss="fnd", epochs=1, max_steps_per_epoch=2, dim=32, heads=2, device="cpu")
    with pytest.raises(ValueError, match="d=16 but the student has d=32"):
        stages.train_stage(run_dir, "student_fnd_d32", cfg, progress=False)


def test_default_names():
    assert stages.default_student_name("fnd", 1.25) == "student_fnd"
    assert stages.default_student_name("fnd", 1.5) == "student_fnd-alpha1.5"
    assert stages.default_student_name("npair", 1.5) == "student_npair"
    assert stages.default_contrastive_name(("erase", "replace"), 0.2, 1.25) == "contrastive"
    assert stages.default_contrastive_name(("erase", "erase"), 0.5, 1.25) == "contrastive-erase-erase-lam0.5"


def test_autoencoder_stage_writes_neighbours_in_category(run_dir):
    metrics = stages.run_autoencoder(run_dir, latent_dim=8, epochs=1, k_neighbours=3, device="cpu", progress=False)
    ds = stages.load_run_dataset(run_dir)
    neighbours = np.load(run_dir / "autoencoder" / "neighbours.npy")
    pool = np.load(run_dir / "autoencoder" / "pool_items.npy")
    assert neighbours.shape == (ds.n_items, 3)
    assert (neighbours[np.setdiff1d(np.arange(ds.n_items), pool)] == -1).all()
    got = neighbours[pool]
    assert np.isin(got[got >= 0], pool).all()
    assert (ds.item_category[np.maximum(got, 0)] == ds.item_category[pool][:, None])[got >= 0].all()
    assert metrics["reconstruction_mse_held_out"] > 0
    assert set(metrics["attribute_agreement"]["neighbour"]) == {"colour", "pattern", "shape"}
    with pytest.raises(ValueError, match="k_neighbours=0"):
        stages.run_autoencoder(run_dir, k_neighbours=0, overwrite=True)


def test_cold_start_experiment(run_dir):
    with pytest.raises(stages.StageError, match=r"\['student_fnd'\] are not trained"):
        run_cold_start(run_dir, ["teacher", "student_fnd"], progress=False)
    with pytest.raises(ValueError, match="tau"):
        run_cold_start(run_dir, ["teacher"], tau=0.0, progress=False)
    result = run_cold_start(run_dir, ["teacher"], n_interactions=(1,), curve_interactions=(1, 2),
                            repetitions=2, device="cpu", progress=False)
    rows = result["rows"]
    assert {r["strategy"] for r in rows} == {"avg", "w-avg", "population", "nearest"}
    assert {r["n_interactions"] for r in rows} == {1, 2}
    assert all(0.0 <= r["auc_mean"] <= 1.0 and r["repetitions"] == 2 for r in rows)
    table = table3(result, n_interactions=(1,))
    assert table.shape == (4, 1)


def test_save_figure_png_is_bounded_in_time(tmp_path, monkeypatch, capsys):
    """The PNG export's time limit, with stand-ins for Chromium (so the test means the same with
    and without a browser installed), then the real export where Chromium exists."""
    import shutil
    import time

    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    monkeypatch.setenv("FNDKIT_PNG", "0")
    assert figures.save_figure(fig, tmp_path / "a") == [tmp_path / "a.html"]
    monkeypatch.delenv("FNDKIT_PNG")
    real_which, real_export = shutil.which, figures._PNG_EXPORT
    # (sys.argv: pairs of the figure's JSON and the PNG to write) — the stand-ins keep that contract
    assert "zip(args[::2], args[1::2])" in real_export
    monkeypatch.setattr(figures.shutil, "which", lambda name, *a, **k: "/usr/bin/chromium"
                        if name == "chromium" else real_which(name, *a, **k))
    # a browser that hangs: given up after the limit, the HTML kept, the reason printed
    monkeypatch.setattr(figures, "_PNG_EXPORT", "import time; time.sleep(60)")
    monkeypatch.setattr(figures, "PNG_TIMEOUT_S", 0.5)
    start = time.perf_counter()
    assert figures.save_figure(fig, tmp_path / "b") == [tmp_path / "b.html"]
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "b.png").exists()
    assert "PNG export of b skipped: no PNG after 0.5 s" in capsys.readouterr().out
    # a browser that answers in time: its picture is kept
    monkeypatch.setattr(figures, "_PNG_EXPORT",
                        "import sys; [open(t, 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n') for t in sys.argv[2::2]]")
    monkeypatch.setattr(figures, "PNG_TIMEOUT_S", 60)
    assert figures.save_figure(fig, tmp_path / "c") == [tmp_path / "c.html", tmp_path / "c.png"]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(figures, "_PNG_EXPORT", real_export)
    monkeypatch.setattr(figures.shutil, "which", real_which)
    if real_which("chromium"):   # the real export, where a browser is installed
        monkeypatch.setattr(figures, "PNG_TIMEOUT_S", 120)
        written = figures.save_figure(fig, tmp_path / "d")
        assert written == [tmp_path / "d.html", tmp_path / "d.png"]
        assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_run_defaults_are_the_params_defaults():
    """A stage's library ``run()`` has no defaults of its own: each one it shares with the stage's
    ``Params`` (its notebook's cell) is the same value, and cold start names its models."""
    import inspect

    from fndkit.stages import autoencoder, cold_start, false_negatives

    for module in (autoencoder, cold_start, false_negatives):
        defaults = module.Params.defaults()
        signature = inspect.signature(module.run)
        shared = [n for n, p in signature.parameters.items() if n in defaults and p.default is not p.empty]
        assert shared, module.__name__
        for name in shared:
            given = signature.parameters[name].default
            given = list(given) if isinstance(given, tuple) else given
            assert given == defaults[name], (module.__name__, name, given, defaults[name])
    assert inspect.signature(cold_start.run).parameters["models"].default is inspect.Parameter.empty
