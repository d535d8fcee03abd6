"""Run the notebook chain with papermill into one run folder (what ``make demo`` calls).

    python -m fndkit.pipeline --run-dir outputs/demo --scale demo [--force] [--only 00_data,02_teacher] [--seed 0]

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

import argparse
import contextlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import papermill as pm

from .artifacts import read_json, write_json
from .progress import ChainProgress, summary_table
from .report import write_report
from .rundir import RunFolder

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# The kernel logs "Kernel is running over TCP without encryption" (and a KeyboardInterrupt line at
# shutdown) on the console for every notebook; its own errors still reach the notebook's cells.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=CRITICAL",)
# OpenMP threads that wait for work by spinning (libgomp's default) turn a 2-core machine that is
# also doing something else into a crawl: with other jobs running, a training step took 4-5x as
# long as with passive waiting (README, "make demo"). A setting of the user's own wins.
KERNEL_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


@dataclass(frozen=True)
class Step:
    """One notebook execution: which notebook, a label for its executed copy, its parameters."""

    notebook: str
    label: str
    parameters: dict = field(default_factory=dict)


def default_chain(scale: str = "demo", seed: int = 0) -> list[Step]:
    """The chain ``make demo`` runs; every later issue appends its notebooks here. A ``seed``
    other than 0 is passed to every notebook (each has a ``seed`` parameter)."""
    # tiny is for tests: fewer autoencoder epochs and cold-start repetitions keep the chain short
    quick = scale == "tiny"
    steps = [
        Step("00_data", "00_data", {"scale": scale}),
        Step("01_autoencoder", "01_autoencoder", {"epochs": 3} if quick else {}),
        Step("02_teacher", "02_teacher", {}),
        Step("03_student", "03_student_fnd", {"loss": "fnd"}),
        Step("03_student", "03_student_npair", {"loss": "npair"}),
        Step("04_contrastive", "04_contrastive", {}),
        Step("06_explorer", "06_explorer", {}),
        Step("08_false_negatives", "08_false_negatives", {}),  # seconds: teacher scores, no training
        Step("05_cold_start", "05_cold_start",
             {"repetitions": 3, "curve_interactions": [1, 5]} if quick else {}),
    ]
    if seed:
        steps = [Step(s.notebook, s.label, {**s.parameters, "seed": seed}) for s in steps]
    return [s for s in steps if notebook_path(s.notebook).exists()]


def notebook_path(name: str) -> Path:
    """``00_data`` -> notebooks/00_data.ipynb; a path ending in .ipynb is taken as it is."""
    return Path(name) if name.endswith(".ipynb") else NOTEBOOK_DIR / f"{name}.ipynb"


class PipelineError(RuntimeError):
    """A notebook of the chain failed; the message names it and the cell."""


class PipelineInterrupted(PipelineError):
    """Ctrl-C stopped the chain; the record says where, and the same command continues it."""


@contextlib.contextmanager
def kernel_environment(extra: dict[str, str] | None = None):
    """Environment variables the notebook kernels inherit (``KERNEL_ENVIRONMENT``, then
    ``extra``), set while the body runs and removed afterwards; variables already set stay."""
    added = {k: v for k, v in {**KERNEL_ENVIRONMENT, **(extra or {})}.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield added
    finally:
        for key in added:
            os.environ.pop(key, None)


def _chain_scale(run: RunFolder, steps: list[Step]) -> str | None:
    """The synthetic scale a chain runs at (its 00_data parameter, else the run folder's data)."""
    for step in steps:
        if "scale" in step.parameters:
            return str(step.parameters["scale"])
    try:
        return run.preset_name() if run.has_data() else None
    except Exception:  # an unreadable dataset description: no estimate, the chain still runs
        return None


def _describe_failure(exc: Exception, notebook: Path) -> str:
    cell = getattr(exc, "exec_count", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    where = f"cell [{cell}]" if cell is not None else "an unknown cell"
    if source:  # the execution count shifts by papermill's injected cell; the source line does not
        where += f" (`{source[0][:80]}`)"
    return f"{notebook.name} failed in {where}: {ename}: {evalue}"


def run_chain(run_dir: str | Path, steps: list[Step], force: bool = False,
              kernel_name: str | None = None, progress: bool = True,
              log_output: bool = False) -> dict:
    """Execute ``steps`` in order into ``run_dir``; return the pipeline record."""
    run = RunFolder(run_dir)
    run_dir, record_path = run.root, run.pipeline_record
    if record_path.exists() and read_json(record_path).get("status") == "finished":
        if not force:
            raise PipelineError(
                f"{run_dir} holds a finished run; choose another --run-dir or pass --force to "
                f"delete it and run again")
        shutil.rmtree(run_dir)
    elif record_path.exists():
        before = read_json(record_path)
        stopped = (before.get(before.get("status", "")) or {}).get("step", "?")
        print(f"continuing the run in {run_dir} ({before.get('status')} during {stopped}): finished "
              f"stages are reused, an unfinished training stage resumes from its last.pt")
    executed_dir = run.notebooks_dir
    executed_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": "running", "steps": [], "run_dir": str(run_dir)}

    def interrupted(label: str, target: Path | None) -> PipelineInterrupted:
        record["status"] = "interrupted"
        record["interrupted"] = {"step": label, "executed_copy": str(target) if target else None}
        write_json(record_path, record)
        return PipelineInterrupted(
            f"interrupted (Ctrl-C) during {label}; {run_dir} keeps everything finished so far: rerun "
            f"the same command to continue (finished stages are reused, an unfinished training stage "
            f"resumes from its last.pt)")
    display = ChainProgress(run, [s.label for s in steps], scale=_chain_scale(run, steps), enabled=progress)
    for step in steps:
        source = notebook_path(step.notebook)
        if not source.exists():
            raise PipelineError(f"notebook {source} does not exist")
        target = executed_dir / f"{step.label}.ipynb"
        params = {"run_dir": str(run_dir), **step.parameters}
        try:
            with display.notebook(step.label) as live, kernel_environment():
                pm.execute_notebook(str(source), str(target), parameters=params,
                                    kernel_name=kernel_name, progress_bar=False,
                                    log_output=log_output, cwd=str(NOTEBOOK_DIR),
                                    extra_arguments=list(KERNEL_ARGUMENTS))  # nbclient appends to it
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: here first ...
            raise interrupted(step.label, target) from None
        except Exception as exc:  # papermill wraps the kernel's error; name notebook and cell
            if getattr(exc, "ename", None) == "KeyboardInterrupt":  # ... or in the kernel first
                raise interrupted(step.label, target) from None
            record["status"] = "failed"
            record["failed"] = {"step": step.label, "message": _describe_failure(exc, source),
                                "executed_copy": str(target)}
            write_json(record_path, record)
            raise PipelineError(
                f"{_describe_failure(exc, source)}\n  executed copy with the traceback: {target}"
            ) from None
        record["steps"].append({"label": step.label, "notebook": step.notebook, "parameters": params,
                                "seconds": round(live["seconds"], 1),
                                **({"training": live["training"]} if "training" in live else {})})
        write_json(record_path, {**record, "status": "running"})
    try:
        write_report(run_dir)
    except KeyboardInterrupt:
        raise interrupted("the report", None) from None
    record["status"] = "finished"
    write_json(record_path, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="outputs/demo")
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--force", action="store_true", help="delete a finished run folder first")
    parser.add_argument("--only", default="", help="comma-separated step labels to run")
    parser.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    parser.add_argument("--seed", type=int, default=0, help="seed passed to every notebook (default 0)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        print(f"--seed {args.seed} must be >= 0", file=sys.stderr)
        return 2
    steps = default_chain(args.scale, seed=args.seed)
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {s.label for s in steps})
        if unknown:
            print(f"unknown step(s) {unknown}; the chain is {[s.label for s in steps]}", file=sys.stderr)
            return 2
        steps = [s for s in steps if s.label in wanted]
    try:
        record = run_chain(args.run_dir, steps, force=args.force, kernel_name=args.kernel)
    except PipelineInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130  # what a shell reports for a program stopped by Ctrl-C
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = sum(s["seconds"] for s in record["steps"])
    print(f"\nseconds per notebook:\n{summary_table(record['steps'])}\n")
    print(f"finished {len(record['steps'])} notebooks in {total:.0f} s; report: {Path(record['run_dir']) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
