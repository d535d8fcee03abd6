"""The bad-input matrix (issue 17): every case gets one clear error that names the value or file
and the fix, and leaves nothing behind — the run folder (and any source folder) holds exactly the
bytes it held before. Where a fix exists, the case then applies it and checks that work resumes.

One parametrized test, ``test_bad_input``, runs the matrix:

- every parameter of every notebook with a wrong type or an out-of-range value
  (:data:`NOTEBOOK_CASES`; :func:`test_every_notebook_parameter_has_a_case` keeps it complete).
  The notebooks' own cells run in this process with papermill's injected parameter cell (a
  kernel costs ~5 s a case); ``-p alpha abc`` and ``-p run_dir <a file>`` go through papermill
  itself, and ``--runslow`` runs the whole table through papermill;
- a run folder from another dataset; a missing, truncated or wrong-header Polyvore-U CSV and one
  with an id out of range; a corrupt and a truncated JPEG; an LMDB without a key; a dataset whose
  images have the wrong size; checkpoints from another model, corrupt and truncated; a full disk
  while writing (a writer patched to fail with ENOSPC, and a real tmpfs with 64 KiB free where
  the test may mount one); a read-only run folder (as root: the effective user switched to
  nobody); Ctrl-C during the notebook chain.

A read-only run folder may still be read: a finished stage is reused from it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import papermill as pm
import pytest
import torch
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from test_polyvore import COLD_USERS, MAIN_USERS, Release, write_lmdb, write_subset

from fndkit.plans import execute as pipeline_jobs
from fndkit import cli, stages
from fndkit.plans import chain as pipeline
from fndkit.config import DataConfig
from fndkit.plans.execute import NOTEBOOK_DIR
from fndkit.stages import training
from fndkit.train import Callback

TRAIN = dict(epochs=1, max_steps_per_epoch=2, batch_size=8, device="cpu", backbone="cnn-small")
FIX = (r"(must|choose|pass|use|give|pick|run |rerun|leave|delete|replace|free|make|copy|point|retrain|add |"
       r"available:|valid ones:)")


# --------------------------------------------------------------------------------------------
# Run folders the cases start from (each case works on a fresh copy)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """empty; data (data + autoencoder); teacher (+ a teacher with its epoch-1 snapshot);
    trained (+ an FND student); other (another dataset, seed 1, with a teacher); release (a tiny
    Polyvore-U release: 630 with the 53 cold pool)."""
    root = tmp_path_factory.mktemp("bad_input")
    (root / "empty").mkdir()
    data = root / "data"
    stages.data.run(data, DataConfig(scale="tiny", seed=0))
    stages.autoencoder.run(data, latent_dim=8, epochs=1, k_neighbours=3, device="cpu", progress=False)
    shutil.copytree(data, root / "teacher")
    training.run(root / "teacher", "teacher", training.teacher_config(root / "teacher", **TRAIN),
                 progress=False, snapshot_epochs=[1])
    shutil.copytree(root / "teacher", root / "trained")
    training.run(root / "trained", "student_fnd",
                 training.student_config(root / "trained", loss="fnd", **TRAIN), progress=False)
    other = root / "other"
    stages.data.run(other, DataConfig(scale="tiny", seed=1))
    training.run(other, "teacher", training.teacher_config(other, **TRAIN), progress=False)
    release = Release(root / "release")
    write_subset(release, "630", variable=False, n_items=(5, 4, 3), users=MAIN_USERS, seed=1)
    write_subset(release, "53", variable=False, n_items=(3, 3, 2), users=COLD_USERS, ratio=2,
                 csv_ext=".csv", seed=2)
    return {"root": root, "empty": root / "empty", "data": data, "teacher": root / "teacher",
            "trained": root / "trained", "other": other, "release": release}


@dataclass
class Ctx:
    """What a case works on: ``run`` (a fresh copy of the case's run folder), ``src`` (a fresh
    copy of the Polyvore-U release), ``tmp``, and the module's ``folders``."""

    run: Path
    src: Path
    tmp: Path
    folders: dict
    monkeypatch: pytest.MonkeyPatch
    notes: dict = field(default_factory=dict)


@dataclass
class Case:
    id: str
    act: Callable[[Ctx], object]           # must raise
    expect: list[str]                      # regexes the message must match (value or file, and fix)
    folder: str = "teacher"                # which run folder the case starts from
    error: type = Exception
    prepare: Callable[[Ctx], None] | None = None    # break something before `act`
    after: Callable[[Ctx], None] | None = None      # apply the fix: work must go on
    needs: Callable[[], str | None] | None = None   # a reason to skip, or None
    unchanged: bool = True                 # False: the case keeps what finished (checked in `after`)

    def __repr__(self) -> str:
        return self.id


def contents(*roots: Path) -> dict:
    """Every path under ``roots`` with a hash of its bytes: what "nothing left behind" compares."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")) if root.exists() else ():
            out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


# --------------------------------------------------------------------------------------------
# Notebook parameters


def execute_in_process(notebook: str, params: dict) -> dict:
    """Run ``notebook``'s code cells here, with the cell papermill injects for ``params`` — the
    code papermill runs, without starting a kernel; stops at the first error, like papermill."""
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK_DIR / f"{notebook}.ipynb")), params)
    namespace = {"__name__": "__main__"}
    with contextlib.chdir(NOTEBOOK_DIR), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                exec(compile(cell.source, f"<{notebook} cell {i}>", "exec"), namespace)
    return namespace


FOLDER_OF = {"00_data": "empty", "01_autoencoder": "data", "02_teacher": "data", "03_student": "teacher",
             "04_contrastive": "teacher", "05_cold_start": "trained", "06_explorer": "trained",
             "07_baselines": "data", "08_false_negatives": "trained", "09_results": "empty"}

# (notebook, parameter, bad value, what the message must say; None: "<parameter>=<value!r>")
NOTEBOOK_CASES = [
    ("00_data", "run_dir", 5, None),
    ("00_data", "source", 7, None),
    ("00_data", "source", "nowhere", r"source='nowhere' is neither 'synthetic' nor an existing folder"),
    ("00_data", "format", "xml", None),
    ("00_data", "subset", "999", None),
    ("00_data", "scale", "huge", None),
    ("00_data", "variable_size", "no", None),
    ("00_data", "taste_breadth", "abc", None),
    ("00_data", "decode", "sometimes", None),
    ("00_data", "appearance", "shiny", None),
    ("00_data", "image_size", 8, None),
    ("00_data", "cold_subset", "99", None),
    ("00_data", "seed", "abc", None),
    ("00_data", "overwrite", "no", None),
    ("01_autoencoder", "latent_dim", 0, None),
    ("01_autoencoder", "epochs", "abc", None),
    ("01_autoencoder", "k_neighbours", 1.5, None),
    ("01_autoencoder", "seed", -1, None),
    ("01_autoencoder", "device", "gpu", r"unknown device 'gpu'"),
    ("01_autoencoder", "overwrite", "no", None),
    ("02_teacher", "backbone", "resnet9000", None),
    ("02_teacher", "weights", 5, None),
    ("02_teacher", "weights", "/nowhere/weights.pt", r"weights='/nowhere/weights.pt': no such file"),
    ("02_teacher", "epochs", 0, None),
    ("02_teacher", "max_steps_per_epoch", 0, None),
    ("02_teacher", "batch_size", 1, None),
    ("02_teacher", "lr", "abc", None),
    ("02_teacher", "tau", 0, None),
    ("02_teacher", "n_negatives", "abc", None),
    ("02_teacher", "hard_fraction", 2, None),
    ("02_teacher", "negatives", "some", None),
    ("02_teacher", "snapshot_epochs", [0], r"snapshot_epochs=0 must be an integer >= 1"),
    ("02_teacher", "snapshot_epochs", "abc", None),
    ("02_teacher", "seed", -1, None),
    ("02_teacher", "device", "gpu", r"unknown device 'gpu'"),
    ("02_teacher", "overwrite", "no", None),
    ("02_teacher", "run_dir", "", r"path parameter is empty \(''\)"),
    ("03_student", "loss", "hinge", None),
    ("03_student", "alpha", "abc", None),
    ("03_student", "tau", -1, None),
    ("03_student", "kd_weight", -1, None),
    ("03_student", "kd_temperature", 0, None),
    ("03_student", "rd_k", 1.5, None),
    ("03_student", "backbone", 7, None),
    ("03_student", "weights", "nowhere.pt", r"weights='.*nowhere\.pt': no such file"),
    ("03_student", "teacher_dir", "nowhere", r"teacher_dir='nowhere': .* has no trained model 'nowhere'"),
    ("03_student", "out_name", "a/b", r"stage name \(out_name\) 'a/b' must be a plain folder name"),
    ("03_student", "epochs", 1.5, None),
    ("03_student", "max_steps_per_epoch", "abc", None),
    ("03_student", "batch_size", "abc", None),
    ("03_student", "lr", -0.1, None),
    ("03_student", "n_negatives", 0, None),
    ("03_student", "hard_fraction", "abc", None),
    ("03_student", "negatives", 5, None),
    ("03_student", "budget_epochs", 0, None),
    ("03_student", "seed", "abc", None),
    ("03_student", "device", 5, None),
    ("03_student", "overwrite", "yes", None),
    ("04_contrastive", "augmentations", "erase,blur", r"augmentations='erase,blur': unknown augmentation 'blur'"),
    ("04_contrastive", "lam", -1, None),
    ("04_contrastive", "tau_cl", 0, None),
    ("04_contrastive", "alpha", 0, None),
    ("04_contrastive", "tau", "abc", None),
    ("04_contrastive", "loss", "nope", None),
    ("04_contrastive", "teacher_dir", "nowhere", r"teacher_dir='nowhere'"),
    ("04_contrastive", "autoencoder_dir", "nowhere", r"autoencoder_dir='nowhere': augmentation 'replace' needs"),
    ("04_contrastive", "out_name", "../x", r"stage name \(out_name\) '\.\./x'"),
    ("04_contrastive", "backbone", "nope", None),
    ("04_contrastive", "weights", 7, None),
    ("04_contrastive", "epochs", -3, None),
    ("04_contrastive", "max_steps_per_epoch", 0, None),
    ("04_contrastive", "batch_size", 0, None),
    ("04_contrastive", "lr", 0, None),
    ("04_contrastive", "n_negatives", -2, None),
    ("04_contrastive", "hard_fraction", -0.5, None),
    ("04_contrastive", "seed", 1.5, None),
    ("04_contrastive", "device", "tpu", r"unknown device 'tpu'"),
    ("04_contrastive", "overwrite", 1, None),
    ("05_cold_start", "models", ["nope"], r"models \['nope'\] are not trained in .*; available"),
    ("05_cold_start", "n_interactions", [0], None),
    ("05_cold_start", "repetitions", 0, None),
    ("05_cold_start", "delta", "abc", r"delta must be a number .*got 'abc'"),
    ("05_cold_start", "tau", 0, None),
    ("05_cold_start", "curve_interactions", [-1], None),
    ("05_cold_start", "cold_split", "sideways", None),
    ("05_cold_start", "seed", -1, r"seeds?.* must be non-negative integers, got -1"),
    ("05_cold_start", "device", "gpu", r"unknown device 'gpu'"),
    ("06_explorer", "model", "nope", r"no trained model 'nope'.*pick one of the models trained there"),
    ("06_explorer", "student", 5, None),
    ("06_explorer", "users", [999], r"users \[999\] are not trained users"),
    ("06_explorer", "method", "xyz", None),
    ("06_explorer", "perplexity", -1, None),
    ("06_explorer", "n_neighbours", 0, None),
    ("06_explorer", "n_negatives", 0, None),
    ("06_explorer", "seed", "abc", None),
    ("07_baselines", "model", "nope", None),
    ("07_baselines", "backbone", "nope", None),
    ("07_baselines", "epochs", 0, None),
    ("07_baselines", "batch_size", 1, None),
    ("07_baselines", "lr", "abc", None),
    ("07_baselines", "tau", -1, None),
    ("07_baselines", "hard_fraction", 3, None),
    ("07_baselines", "seed", -1, None),
    ("07_baselines", "device", "gpu", r"unknown device 'gpu'"),
    ("07_baselines", "overwrite", "no", None),
    ("07_baselines", "out_name", "a/b", r"stage name \(out_name\) 'a/b'"),
    ("08_false_negatives", "teacher", "nope", r"no trained model 'nope'"),
    ("08_false_negatives", "alpha", -1, None),
    ("08_false_negatives", "alphas", [0], r"alphas=\[0\.0\] must be > 0"),
    ("08_false_negatives", "n_per_positive", 0, None),
    ("08_false_negatives", "max_positives", 0, None),
    ("08_false_negatives", "seed", "abc", None),
    ("08_false_negatives", "device", "gpu", r"unknown device 'gpu'"),
    ("09_results", "root", "/nowhere/at/all", r"/nowhere/at/all holds no results.csv"),
] + [(nb, "run_dir", 5, None) for nb in ("01_autoencoder", "03_student", "04_contrastive", "05_cold_start",
                                         "06_explorer", "07_baselines", "08_false_negatives")]
# through papermill itself in the fast tier (as `papermill … -p alpha abc` etc. would pass them)
PAPERMILL_CASES = [("03_student", "alpha", "abc"), ("02_teacher", "run_dir", "FILE")]  # the rest: --runslow


def notebook_case(notebook, param, value, pattern) -> Case:
    def act(ctx):
        execute_in_process(notebook, {"run_dir": str(ctx.run), param: value})
    return Case(f"{notebook} -p {param} {value!r}", act, [pattern or re.escape(f"{param}={value!r}"), FIX],
                folder=FOLDER_OF[notebook])


def papermill_case(notebook, param, value) -> Case:
    def act(ctx):
        bad = value
        if value == "FILE":  # run_dir pointing at a file
            bad = str(ctx.tmp / "a_file")
            Path(bad).write_text("not a folder")
        params = {"run_dir": str(ctx.run), param: bad}
        try:
            pm.execute_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb"), str(ctx.tmp / "out.ipynb"),
                                parameters=params, progress_bar=False, cwd=str(NOTEBOOK_DIR))
        except pm.PapermillExecutionError as exc:  # the notebook's own error: one line, no traceback
            raise RuntimeError(f"{exc.ename}: {exc.evalue}") from None
    expect = (r"run_dir='.*a_file' points at .*, which is a file, not a folder" if value == "FILE"
              else re.escape(f"{param}={value!r}"))
    return Case(f"papermill {notebook} -p {param} {value}", act, [expect, FIX], folder=FOLDER_OF[notebook])


# --------------------------------------------------------------------------------------------
# Run folders, data files, images, checkpoints


def train_student(ctx, teacher_dir=None):
    cfg = training.student_config(ctx.run, loss="fnd", **TRAIN)
    return training.run(ctx.run, "student_fnd", cfg, teacher_dir=teacher_dir, progress=False)


SMALL = dict(dim=16, heads=2, max_steps_per_epoch=1)  # a teacher no student reads: as small as it gets


def train_teacher(ctx, **cfg):
    return training.run(ctx.run, "teacher", training.teacher_config(ctx.run, **{**TRAIN, **SMALL, **cfg}),
                        progress=False)


def read_release(ctx):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random fixture breaks a split invariant: a warning
        return stages.data.run(ctx.run, DataConfig(source=str(ctx.src), image_size=16))


def posi(ctx, split="val") -> Path:
    return ctx.src / "tuples_630" / f"tuples_{split}_posi"


def edit_line(path: Path, line_no: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


def image_file(ctx, name="630-bottom-1.jpg") -> Path:
    return ctx.src / "images" / "291x291" / name


def the_release_reads(ctx):
    """The fix applied (the fixture's file back): 00_data now reads the release."""
    shutil.rmtree(ctx.src)
    shutil.copytree(ctx.folders["release"].root, ctx.src)
    assert read_release(ctx).name == "polyvore-630"


def half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def starts_over_after_delete(ctx):
    """The fix the message names: delete last.pt, and the same call trains the stage afresh."""
    (ctx.run / "teacher" / "last.pt").unlink()
    assert train_teacher(ctx, epochs=2)["epochs_run"] == 2


class CtrlCInEpoch2(Callback):
    def on_batch_end(self, t):
        if t.state.epoch == 1:
            raise KeyboardInterrupt


def partial_teacher(ctx):
    """A teacher stopped by Ctrl-C in epoch 2 of 2: last.pt of epoch 1, no metrics.json."""
    shutil.rmtree(ctx.run / "teacher")
    with pytest.raises(KeyboardInterrupt):
        training.run(ctx.run, "teacher", training.teacher_config(ctx.run, **{**TRAIN, **SMALL, "epochs": 2}),
                     progress=False, callbacks=[CtrlCInEpoch2()])
    assert (ctx.run / "teacher" / "last.pt").exists() and not (ctx.run / "teacher" / "metrics.json").exists()


def full_disk_at(n_save: int):
    """Patch torch.save so that its ``n_save``-th call (1-based) writes a few bytes and fails
    like a full disk."""
    def prepare(ctx):
        real, calls = torch.save, []

        def save(obj, f, *a, **kw):
            calls.append(1)
            if len(calls) == n_save:
                f.write(b"PK\x03\x04 half a zip")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(obj, f, *a, **kw)
        ctx.monkeypatch.setattr(torch, "save", save)
    return prepare


def disk_freed_run_resumes(ctx):
    """Space back: the same call resumes from epoch 1's last.pt and ends where a run that never
    met a full disk ends."""
    ctx.monkeypatch.undo()
    state = torch.load(ctx.run / "teacher" / "last.pt", weights_only=True)["extra"]["train_state"]
    assert state["epoch"] == 1 and not list((ctx.run / "teacher").glob(".*tmp*"))
    resumed = train_teacher(ctx, epochs=2)
    clean = ctx.tmp / "clean"
    shutil.copytree(ctx.folders["data"], clean)
    plain = training.run(clean, "teacher", training.teacher_config(clean, **{**TRAIN, **SMALL, "epochs": 2}),
                         progress=False)
    assert resumed["test"] == plain["test"] and resumed["best_epoch"] == plain["best_epoch"]


def can_mount() -> str | None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return "mounting a tmpfs needs root"
    with tempfile.TemporaryDirectory() as probe:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], capture_output=True)
        if ok.returncode:
            return f"cannot mount a tmpfs here: {ok.stderr.decode().strip()}"
        subprocess.run(["umount", probe], check=True)
    return None


@contextlib.contextmanager
def small_disk(path: Path, free_kib: int):
    """A real tmpfs at ``path`` holding ``path``'s current files, with about ``free_kib`` KiB free."""
    keep = path.with_name(path.name + ".files")
    shutil.move(path, keep)
    path.mkdir()
    size = sum(p.stat().st_size for p in keep.rglob("*") if p.is_file())
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size // 1024 + 2048}k", "tmpfs", str(path)], check=True)
    try:
        shutil.copytree(keep, path, dirs_exist_ok=True)
        free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
        (path / ".filler").write_bytes(b"\0" * max(0, free - free_kib * 1024))
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
        path.rmdir()
        shutil.move(keep, path)


def on_small_disk(ctx):
    with small_disk(ctx.run, free_kib=64):
        try:
            train_teacher(ctx)
        finally:
            ctx.notes["left"] = sorted(p.name for p in ctx.run.iterdir())


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` and everything in it read-only for this process: write bits off, and as root
    (whom permissions do not stop) the effective user switched to nobody meanwhile."""
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    root = os.geteuid() == 0
    try:
        if root:
            os.seteuid(65534)
        yield
    finally:
        if root:
            os.seteuid(0)
        for p, mode in modes.items():
            p.chmod(mode)


def in_read_only_folder(ctx):
    """A run folder readable by everyone (as the nobody user needs) but writable by no one."""
    shared = Path(tempfile.mkdtemp(prefix="fndkit-ro-"))
    shared.chmod(0o755)
    ctx.notes["shared"] = shared
    run = shared / "run"
    shutil.copytree(ctx.run, run)
    ctx.notes["before"] = contents(run)
    with read_only(run):
        metrics = training.run(run, "teacher", training.teacher_config(run, **TRAIN), progress=False)
        assert metrics["test"]  # a finished stage is reused: reading needs no write
        training.run(run, "student_fnd", training.student_config(run, loss="fnd", **TRAIN), progress=False)


def read_only_left_nothing(ctx):
    shared = ctx.notes["shared"]
    try:
        assert contents(shared / "run") == ctx.notes["before"]
    finally:
        shutil.rmtree(shared)


class KernelInterrupted(Exception):
    """What papermill raises when the kernel got the Ctrl-C first (a PapermillExecutionError)."""

    ename, evalue, exec_count, source = "KeyboardInterrupt", "", 3, "metrics = stages.training.run(...)"


def ctrl_c(where: str):
    """The notebook chain over 00_data and 02_teacher, with notebook execution recorded (not
    run) and Ctrl-C arriving during 02_teacher in the parent or in the kernel."""
    def act(ctx):
        calls = ctx.notes.setdefault("calls", [])

        def execute(source, target, parameters, **kw):
            if Path(target).stem == "02_teacher" and not ctx.notes.get("resumed"):
                raise KeyboardInterrupt if where == "parent" else KernelInterrupted()
            calls.append(Path(target).stem)
            Path(target).write_text("{}")

        ctx.monkeypatch.setattr(pipeline_jobs.pm, "execute_notebook", execute)
        ctx.monkeypatch.setattr(pipeline, "write_report", lambda run_dir: None)
        steps = [job for job in pipeline.default_chain("tiny") if job.label in ("00_data", "02_teacher")]
        ctx.monkeypatch.setattr(pipeline, "default_chain", lambda scale, seed=0, run_dir=None: steps)
        code = cli.main(["chain", "--run-dir", str(ctx.run / "chain"), "--scale", "tiny"])
        assert code == 130
        pipeline.run_chain(ctx.run / "chain2", steps, progress=False)  # the exception main() turns into 130

    def after(ctx):
        record = json.loads((ctx.run / "chain" / "pipeline.json").read_text())
        assert record["status"] == "interrupted" and record["interrupted"]["step"] == "02_teacher"
        assert [s["label"] for s in record["steps"]] == ["00_data"]
        ctx.notes["resumed"] = True
        assert cli.main(["chain", "--run-dir", str(ctx.run / "chain"), "--scale", "tiny"]) == 0
        assert json.loads((ctx.run / "chain" / "pipeline.json").read_text())["status"] == "finished"
        assert ctx.notes["calls"] == ["00_data", "00_data", "00_data", "02_teacher"]

    return Case(f"Ctrl-C in the {where} during the notebook chain", act,
                [r"interrupted \(Ctrl-C\) during 02_teacher", r"rerun the same command to continue"],
                error=pipeline.PipelineInterrupted, unchanged=False, after=after)


OTHER_CASES = [
    # a run folder from another dataset
    Case("00_data: run folder holds another dataset", lambda ctx: stages.data.run(ctx.run, DataConfig(scale="tiny", seed=1)),
         [r"run/data already holds dataset 'synthetic-tiny' built with .*'seed': 0", r"use another run_dir, or pass overwrite=True"]),
    Case("teacher_dir from another dataset", lambda ctx: train_student(ctx, teacher_dir=str(ctx.folders["other"] / "teacher")),
         [r"other/teacher/checkpoint\.pt was trained on dataset 'synthetic-tiny' \(fingerprint \w+\), not on",
          r"retrain it on this run_dir"]),
    Case("teacher folder copied from another run folder", lambda ctx: train_student(ctx),
         [r"teacher/checkpoint\.pt was trained on dataset .* not on this run folder's", r"retrain it on this run_dir"],
         prepare=lambda ctx: (shutil.rmtree(ctx.run / "teacher"),
                              shutil.copytree(ctx.folders["other"] / "teacher", ctx.run / "teacher"))),
    # Polyvore-U CSV files (00_data on a release folder)
    Case("missing CSV", read_release, [r"tuples_630: missing file tuples_test_nega or tuples_test_nega\.csv",
                                       r"expected the Fashion-Hash-Net Polyvore-U layout"],
         folder="empty", prepare=lambda ctx: (ctx.src / "tuples_630" / "tuples_test_nega").unlink(),
         after=the_release_reads),
    Case("truncated CSV (cut mid-row)", read_release,
         [r"tuples_val_posi, line 8: 3 fields, expected 4 \(user,top,bottom,shoe\): '\d+,\d+,'", r"copy it again"],
         folder="empty", prepare=lambda ctx: posi(ctx).write_text(posi(ctx).read_text()[:-4]), after=the_release_reads),
    Case("truncated CSV (empty)", read_release, [r"tuples_val_posi, line 1: empty file or empty header; expected the header"],
         folder="empty", prepare=lambda ctx: posi(ctx).write_text(""), after=the_release_reads),
    Case("CSV with a wrong header", read_release,
         [r"tuples_val_posi, line 1: header 'user,top,bottom,shoes' does not match .*expected 'user,top,bottom,shoe'"],
         folder="empty", prepare=lambda ctx: edit_line(posi(ctx), 1, "user,top,bottom,shoes"), after=the_release_reads),
    Case("CSV with an id out of range", read_release,
         [r"tuples_val_posi, line 4: bottom index 9 \(column 3\) is out of range for image_list_bottom \(4 items, valid 0\.\.3\)"],
         folder="empty", prepare=lambda ctx: edit_line(posi(ctx), 4, "0,1,9,1"), after=the_release_reads),
    # images
    Case("corrupt JPEG", read_release,
         [r"cannot decode the image of item 6 \(.*630-bottom-1\.jpg\)", r"corrupt or truncated: replace it",
          r"item 6 comes from line 2 of .*image_list_bottom"],
         folder="empty", prepare=lambda ctx: image_file(ctx).write_bytes(b"this is not a JPEG" * 20),
         after=the_release_reads),
    Case("truncated JPEG", read_release,
         [r"cannot decode the image of item 6 \(.*630-bottom-1\.jpg\).*[Tt]runcated", r"replace it"],
         folder="empty", prepare=lambda ctx: half(image_file(ctx)), after=the_release_reads),
    Case("LMDB without a key", read_release,
         [r"the LMDB at .*images/lmdb has no image for item 6 \(tried keys '630-bottom-1\.jpg', '630-bottom-1'\)",
          r"add the image under that key"],
         folder="empty", prepare=lambda ctx: write_lmdb(Release(ctx.src, ctx.folders["release"].colour_of),
                                                        skip="630-bottom-1.jpg"),
         needs=lambda: None if _has_lmdb() else "the lmdb package is not installed"),
    Case("images of the wrong size in the run folder", lambda ctx: train_teacher(ctx),
         [r"data/images\.npy holds \d+ images of 16x16 px, but .*dataset\.json describes \d+ items at 32x32 px",
          r"rerun notebooks/00_data\.ipynb with overwrite=True"],
         folder="data", prepare=lambda ctx: np.save(ctx.run / "data" / "images.npy",
                                                    np.load(ctx.run / "data" / "images.npy")[:, ::2, ::2])),
    # checkpoints
    Case("teacher_dir at another model's checkpoint (the autoencoder's)",
         lambda ctx: train_student(ctx, teacher_dir=str(ctx.run / "autoencoder")),
         [r"teacher_dir='.*autoencoder': .*autoencoder/checkpoint\.pt is not the checkpoint of a model fndkit can rebuild",
          r"point at a trained recommender"]),
    Case("another model's checkpoint.pt copied into the teacher folder", lambda ctx: train_student(ctx),
         [r"teacher/checkpoint\.pt was not trained by its stage folder \(.*val_split='val_student' in the checkpoint, "
          r"'val_teacher' in config\.json", r"put the stage's own checkpoint back, or retrain"],
         folder="trained", prepare=lambda ctx: (shutil.copyfile(ctx.run / "student_fnd" / "checkpoint.pt",
                                                                ctx.run / "teacher" / "checkpoint.pt"),
                                                shutil.rmtree(ctx.run / "student_fnd"))),
    Case("another model's last.pt in an unfinished stage", lambda ctx: train_teacher(ctx, epochs=2),
         [r"cannot resume from .*teacher/last\.pt: it was trained with another config \(.*loss='fnd' there, "
          r"'npair' here", r"delete it \(or pass overwrite=True to the stage\) to start over"],
         folder="trained", prepare=lambda ctx: (partial_teacher(ctx), shutil.copyfile(
             ctx.run / "student_fnd" / "last.pt", ctx.run / "teacher" / "last.pt")),
         after=starts_over_after_delete),
    Case("corrupt last.pt", lambda ctx: train_teacher(ctx, epochs=2),
         [r"cannot resume from .*teacher/last\.pt: the file is unreadable .*truncated, corrupt or not an fndkit checkpoint",
          r"delete it \(or pass overwrite=True\) to start the stage over"],
         prepare=lambda ctx: (partial_teacher(ctx), (ctx.run / "teacher" / "last.pt").write_bytes(b"\x00garbage" * 64)),
         after=starts_over_after_delete),
    Case("truncated last.pt", lambda ctx: train_teacher(ctx, epochs=2),
         [r"cannot resume from .*teacher/last\.pt: the file is unreadable", r"delete it"],
         prepare=lambda ctx: (partial_teacher(ctx), half(ctx.run / "teacher" / "last.pt")), after=starts_over_after_delete),
    Case("truncated teacher checkpoint.pt", lambda ctx: train_student(ctx),
         [r"cannot read checkpoint .*teacher/checkpoint\.pt: it is truncated, corrupt or not an fndkit checkpoint",
          r"delete it and rerun the stage that writes it"],
         prepare=lambda ctx: half(ctx.run / "teacher" / "checkpoint.pt")),
    # a full disk, a read-only folder
    Case("full disk at the first checkpoint", lambda ctx: train_teacher(ctx),
         [r"cannot write .*teacher/checkpoint\.pt: the disk is full", r"free space there \(df -h .*\) and rerun"],
         folder="data", prepare=full_disk_at(1), error=OSError),
    Case("full disk in epoch 2 (resumes once freed)", lambda ctx: train_teacher(ctx, epochs=2),
         [r"cannot write .*teacher/(checkpoint|last)\.pt: the disk is full", r"training resumes from its last\.pt"],
         folder="data", prepare=full_disk_at(3), error=OSError, unchanged=False, after=disk_freed_run_resumes),
    Case("a real full disk (1 MiB tmpfs)", on_small_disk,
         [r"cannot write .*/teacher/\S+: the disk is full \(No space left on device\)", r"df -h"],
         folder="data", error=OSError, needs=can_mount,
         after=lambda ctx: ctx.notes["left"] == [".filler", "autoencoder", "data"] or pytest.fail(str(ctx.notes))),
    Case("read-only run folder", in_read_only_folder,
         [r"cannot write .*/run/student_fnd/config\.json: permission denied", r"make .*/run writable, or pass another run_dir"],
         error=PermissionError, after=read_only_left_nothing),
    ctrl_c("parent"),
    ctrl_c("kernel"),
]


def _has_lmdb() -> bool:
    try:
        import lmdb  # noqa: F401
    except ImportError:
        return False
    return True


CASES = ([notebook_case(*c) for c in NOTEBOOK_CASES] + [papermill_case(*c) for c in PAPERMILL_CASES]
         + OTHER_CASES)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_bad_input(case: Case, folders, tmp_path, monkeypatch):
    if case.needs and (reason := case.needs()):
        pytest.skip(reason)
    run, src = tmp_path / "run", tmp_path / "src"
    shutil.copytree(folders[case.folder], run)
    shutil.copytree(folders["release"].root, src)
    ctx = Ctx(run, src, tmp_path, folders, monkeypatch)
    if case.prepare:
        case.prepare(ctx)
    before = contents(run, src)
    with pytest.raises(case.error) as info:
        case.act(ctx)
    message = str(info.value)
    for pattern in case.expect:
        assert re.search(pattern, message, re.S), f"{pattern!r} not in: {message}"
    assert "Traceback" not in message
    if case.unchanged:
        assert contents(run, src) == before, "the failed call left something behind"
    if case.after:
        case.after(ctx)


def parameters_of(notebook: Path) -> list[str]:
    nb = load_notebook_node(str(notebook))
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return [line.split("=")[0].strip() for line in cell.source.splitlines()
            if "=" in line and not line.lstrip().startswith("#")]


def test_every_notebook_parameter_has_a_case():
    """A new notebook parameter needs a row in NOTEBOOK_CASES (a wrong type or an out-of-range
    value, and the message it must give)."""
    covered = {(nb, param) for nb, param, _, _ in NOTEBOOK_CASES}
    missing = [(p.stem, name) for p in sorted(NOTEBOOK_DIR.glob("*.ipynb")) for name in parameters_of(p)
               if (p.stem, name) not in covered]
    assert missing == []


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("notebook,param,value,pattern", NOTEBOOK_CASES,
                         ids=[f"{n} -p {p} {v!r}" for n, p, v, _ in NOTEBOOK_CASES])
def test_notebook_parameters_through_papermill(notebook, param, value, pattern, folders, tmp_path):
    """The whole parameter table through papermill and a kernel (~5 s a case)."""
    run = tmp_path / "run"
    shutil.copytree(folders[FOLDER_OF[notebook]], run)
    before = contents(run)
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"run_dir": str(run), param: value}, progress_bar=False,
                            cwd=str(NOTEBOOK_DIR))
    assert re.search(pattern or re.escape(f"{param}={value!r}"), info.value.evalue, re.S), info.value.evalue
    assert contents(run) == before
