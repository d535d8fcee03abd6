"""The demo chain: a plan builder (:func:`default_chain`) and its run into one run folder (what
``make demo`` calls), executed by :func:`fndkit.plans.execute.run_plan` as notebooks.

    python -m fndkit chain --run-dir outputs/demo --scale demo [--force] [--only 00_data,02_teacher] [--seed 0]

Executed copies of the notebooks are saved in ``run_dir/notebooks/``. A failing notebook stops the
chain with a message naming the notebook and the cell. A finished run folder (``pipeline.json`` with
status ``finished``) is never overwritten unless ``--force`` is given. Ctrl-C stops the chain
cleanly (status ``interrupted``, exit code 130); the same command then continues it: finished
stages are reused and an unfinished training stage resumes from its ``last.pt``. At the end the
tables of every stage's ``metrics.json`` are gathered into ``run_dir/report.md``.

While a notebook runs, one console line shows it, its training stage's epoch, loss and validation
AUC, and the time left in it and in the chain (:mod:`fndkit.progress`); the kernels' own log lines
are kept off the console, and the run ends with a table of seconds per notebook (also in
``pipeline.json``).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from ..artifacts import read_json, write_json
from ..config import SCALE_PRESETS
from ..results.report import write_report
from ..rundir import RunFolder
from .execute import Job, JobError, JobInterrupted, Local, params_for, run_plan

__all__ = ["PipelineError", "PipelineInterrupted", "default_chain", "run_chain"]

TRAINED = ("teacher", "student", "contrastive")   # the kinds the demo's tour budget applies to


def default_chain(scale: str = "demo", seed: int = 0, run_dir: str | Path = "outputs/demo") -> list[Job]:
    """The jobs ``make demo`` runs, labelled as their executed notebooks. A ``seed`` other than 0
    is passed to every stage (each has a ``seed`` parameter); a scale with a ``chain_epochs``
    budget (demo) passes it to the teacher and the students as ``epochs``."""
    # tiny is for tests: fewer autoencoder epochs and cold-start repetitions keep the chain short
    quick = scale == "tiny"
    steps = [
        ("00_data", "data", {"scale": scale}),
        ("01_autoencoder", "autoencoder", {"epochs": 3} if quick else {}),
        ("02_teacher", "teacher", {}),
        ("03_student_fnd", "student", {"loss": "fnd"}),
        ("03_student_npair", "student", {"loss": "npair"}),
        ("04_contrastive", "contrastive", {}),
        ("06_explorer", "explorer", {}),
        ("08_false_negatives", "false_negatives", {}),  # seconds: teacher scores, no training
        ("05_cold_start", "cold_start", {"repetitions": 3, "curve_interactions": [1, 5]} if quick else {}),
    ]
    extra = {"seed": seed} if seed else {}
    budget = SCALE_PRESETS.get(scale, {}).get("chain_epochs")   # the demo's tour budget (config.py)
    return [Job(params_for(kind, run_dir=str(run_dir), **values, **extra,
                           **({"epochs": budget} if budget and kind in TRAINED else {})), label=label)
            for label, kind, values in steps]



class PipelineError(RuntimeError):
    """A notebook of the chain failed; the message names it and the cell."""


class PipelineInterrupted(PipelineError):
    """Ctrl-C stopped the chain; the record says where, and the same command continues it."""


def _chain_scale(run: RunFolder, jobs: list[Job]) -> str | None:
    """The synthetic scale a chain runs at (its data job's, else the run folder's data)."""
    for job in jobs:
        if job.kind == "data":
            return str(job.params.scale)
    try:
        return run.preset_name() if run.has_data() else None
    except Exception:  # an unreadable dataset description: no estimate, the chain still runs
        return None


def _refuse_or_continue(run: RunFolder, force: bool) -> None:
    """A finished chain is refused unless ``force`` (which deletes it); an unfinished one continues."""
    record_path = run.pipeline_record
    if record_path.exists() and read_json(record_path).get("status") == "finished":
        if not force:
            raise PipelineError(f"{run.root} holds a finished run; choose another --run-dir or pass --force to "
                                f"delete it and run again")
        shutil.rmtree(run.root)
    elif record_path.exists():
        before = read_json(record_path)
        stopped = (before.get(before.get("status", "")) or {}).get("step", "?")
        print(f"continuing the run in {run.root} ({before.get('status')} during {stopped}): finished "
              f"stages are reused, an unfinished training stage resumes from its last.pt")


def run_chain(run_dir: str | Path, jobs: list[Job], force: bool = False, kernel_name: str | None = None,
              progress: bool = True, log_output: bool = False, via: str = "notebook", workers: int = 1,
              threads: int | None = None) -> dict:
    """Run ``jobs`` (moved into ``run_dir``) as one chain and keep its record,
    ``run_dir/pipeline.json``; return the record. A finished run folder is refused unless
    ``force`` (which deletes it first). ``workers`` 2: the students side by side (each job with
    ``threads`` torch threads; default the cores shared evenly)."""
    given = str(run_dir)  # the executed notebooks keep the folder as given: a moved run folder re-runs there
    run = RunFolder(run_dir)
    run_dir, record_path = run.root, run.pipeline_record
    _refuse_or_continue(run, force)
    jobs = [dataclasses.replace(j.with_params(run_dir=given), experiment="chain") for j in jobs]
    run.root.mkdir(parents=True, exist_ok=True)
    record = {"status": "running", "steps": [], "run_dir": str(run_dir), "seconds": 0.0}
    start = time.perf_counter()

    def stopped(status: str, exc: JobError) -> None:
        record["status"] = status
        label = (exc.job.label or exc.job.stage) if exc.job is not None else "?"
        record[status] = {"step": label, "executed_copy": str(exc.executed_copy) if exc.executed_copy else None}
        if status == "failed":
            record[status]["message"] = str(exc).splitlines()[0]
        write_json(record_path, record)

    def done(job: Job, metrics: dict, step: dict) -> None:
        record["steps"].append({k: step[k] for k in ("label", "notebook", "parameters", "seconds", "training")
                                if k in step})
        write_json(record_path, record)

    try:
        run_plan(jobs, via=via, dispatch=Local(workers, threads), progress=progress, on_done=done,
                 kernel_name=kernel_name, log_output=log_output, scale=_chain_scale(run, jobs))
    except JobInterrupted as exc:
        stopped("interrupted", exc)
        raise PipelineInterrupted(
            f"{exc}; {run_dir} keeps everything finished so far: rerun the same command to continue "
            f"(finished stages are reused, an unfinished training stage resumes from its last.pt)") from None
    except JobError as exc:
        stopped("failed", exc)
        raise PipelineError(str(exc)) from None
    try:
        write_report(run_dir)
    except KeyboardInterrupt:
        record["status"], record["interrupted"] = "interrupted", {"step": "the report", "executed_copy": None}
        write_json(record_path, record)
        raise PipelineInterrupted("interrupted (Ctrl-C) during the report; rerun the same command to "
                                  "continue") from None
    record["status"], record["seconds"] = "finished", round(time.perf_counter() - start, 1)
    write_json(record_path, record)
    return record
