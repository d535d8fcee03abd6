"""One unit of work and one executor: a :class:`Job` is a stage's typed ``Params``; :func:`run_plan`
runs a list of them, in this process, in worker processes, or as notebooks through papermill.

Every plan of fndkit is a list of jobs built by a plan builder — the demo chain
(:func:`fndkit.pipeline.default_chain`), the paper's tables and figures
(:mod:`fndkit.experiments`), the false-negative lab (:mod:`fndkit.fnlab`) — and every one of them
is executed here, by one code path:

- ``via="process"`` calls the stage's ``execute(params)``; ``via="notebook"`` executes the stage's
  notebook with ``params.to_dict()`` as its papermill parameters, whose cell builds the same
  ``Params`` and calls the same ``execute`` — so the two paths write the same ``metrics.json``.
- Order by prerequisites, per run folder: data → autoencoder → teacher → students (student,
  contrastive, baseline) → diagnostics (false negatives, explorer) → cold start (:data:`RANK`). A
  job starts only when every job of a lower rank in its folder has ended; when a prerequisite
  (data, autoencoder, teacher: :data:`PREREQUISITE_RANK` and below) failed, the folder's later jobs
  do not start, while a failed student still lets the diagnostics and cold start run on the rest.
- Duplicates (the same kind and parameters) run once.
- ``workers`` > 1: worker processes (spawned, so CUDA works; on CPU each gets ``cores // workers``
  threads), lowest seed first so that a plan cut short by ``time_limit`` leaves whole seeds.
- Resumable: each stage reuses its finished folder when the configuration is the same, and a
  partial training stage resumes from its ``last.pt``; so a rerun of an interrupted plan continues.
- A failing job is named with its executed notebook (``via="notebook"``) or the last lines of its
  traceback; ``on_failure="stop"`` raises :class:`JobError` (the chain and the paper's sweep),
  ``"continue"`` runs the rest (the lab).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import papermill as pm
import torch
from tqdm.auto import tqdm

from .config import check_int
from .progress import ChainProgress
from .rundir import RunFolder, resolve_path
from .stages import autoencoder, cold_start, data, false_negatives, pretrain, training
from .stages.params import StageParams
from .viz import explorer

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# The kernel logs "Kernel is running over TCP without encryption" (and a KeyboardInterrupt line at
# shutdown) on the console for every notebook; its own errors still reach the notebook's cells.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=CRITICAL",)
# OpenMP threads that wait for work by spinning (libgomp's default) turn a 2-core machine that is
# also doing something else into a crawl: with other jobs running, a training step took 4-5x as
# long as with passive waiting (README, "make demo"). A setting of the user's own wins.
KERNEL_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}

# Every stage kind: its Params (the notebook's cell) and its execute(params, progress) -> metrics.
STAGES: dict[str, tuple[type[StageParams], Callable[..., dict]]] = {
    "data": (data.Params, data.execute),
    "autoencoder": (autoencoder.Params, autoencoder.execute),
    "pretrain": (pretrain.Params, pretrain.execute),
    "teacher": (training.TeacherParams, training.execute),
    "student": (training.StudentParams, training.execute),
    "contrastive": (training.ContrastiveParams, training.execute),
    "baseline": (training.BaselineParams, training.execute),
    "false_negatives": (false_negatives.Params, false_negatives.execute),
    "explorer": (explorer.Params, explorer.execute),
    "cold_start": (cold_start.Params, cold_start.execute),
}
RANK = {"data": 0, "autoencoder": 1, "pretrain": 1, "teacher": 2, "student": 3, "contrastive": 3, "baseline": 3,
        "false_negatives": 4, "explorer": 4, "cold_start": 5}
PREREQUISITE_RANK = 2   # data, autoencoder, pre-training, teacher: what every later job of a folder stands on
VIA = ("process", "notebook")


class JobError(RuntimeError):
    """A job failed; the message names it and its executed notebook or traceback."""

    def __init__(self, message: str, job: "Job | None" = None, executed_copy: Path | None = None):
        super().__init__(message)
        self.job, self.executed_copy = job, executed_copy


class JobInterrupted(JobError):
    """Ctrl-C stopped the plan; rerunning it continues (finished stages are reused)."""


def params_for(kind: str, **values) -> StageParams:
    """The ``Params`` of stage ``kind`` from parameter names (unknown kinds and names refused)."""
    if kind not in STAGES:
        raise ValueError(f"stage kind {kind!r} is unknown; choose one of {', '.join(STAGES)}")
    return STAGES[kind][0].from_dict(values)


@dataclass(frozen=True)
class Job:
    """One stage to run: its typed parameters, and for results tables the method it stands for and
    the settings it varies (``shown``). ``label`` names its executed notebook and log lines."""

    params: StageParams
    label: str = ""
    method: str = ""
    shown: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not isinstance(self.params, StageParams) or self.params.kind not in STAGES:
            raise TypeError(f"Job needs a stage's Params (one of {', '.join(STAGES)}), got {self.params!r}")

    @property
    def kind(self) -> str:
        return self.params.kind

    @property
    def run_dir(self) -> str:
        return str(resolve_path(self.params.run_dir))

    @property
    def notebook(self) -> str:
        return self.params.notebook

    @property
    def key(self) -> str:
        """Kind and parameters (run folder resolved): two jobs with one key are one job."""
        values = {**self.params.to_dict(), "run_dir": self.run_dir}
        return json.dumps({"kind": self.kind, "params": values}, sort_keys=True, default=str)

    @property
    def seed(self) -> int:
        return int(getattr(self.params, "seed", 0) or 0)

    def name(self) -> str:
        """The stage folder this job fills: its ``out_name``, the training stage's planned name
        once the folder has data, else the kind."""
        out = getattr(self.params, "out_name", None)
        if out:
            return str(out)
        if isinstance(self.params, training._TrainingParams) and RunFolder(self.run_dir).has_data():
            try:
                return self.params.plan().stage
            except Exception:  # a bad parameter is reported when the job runs, not here
                return self.kind
        return self.kind

    @property
    def stage(self) -> str:
        """Its label, else :meth:`name`: plan builders label a job with the stage it fills."""
        return self.label or self.name()

    def describe(self) -> str:
        """``<run folder>/<label or stage>`` for logs."""
        parts = Path(self.run_dir).parts[-2:]
        return "/".join([*parts, self.label or self.name()])


def unique_jobs(jobs: Iterable[Job]) -> list[Job]:
    """``jobs`` without repeats (same kind and parameters), first occurrence kept."""
    seen: dict[str, Job] = {}
    for job in jobs:
        seen.setdefault(job.key, job)
    return list(seen.values())


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


def describe_failure(exc: BaseException, notebook: Path) -> str:
    """``<notebook> failed in cell [n] (`first line`): Error: message`` from papermill's error."""
    cell = getattr(exc, "exec_count", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    where = f"cell [{cell}]" if cell is not None else "an unknown cell"
    if source:  # the execution count shifts by papermill's injected cell; the source line does not
        where += f" (`{source[0][:80]}`)"
    return f"{notebook.name} failed in {where}: {ename}: {evalue}"


def executed_copy(job: Job) -> Path:
    """Where ``via="notebook"`` saves the executed notebook: ``<run folder>/notebooks/<label>``."""
    return RunFolder(job.run_dir).notebooks_dir / f"{job.label or job.name()}.ipynb"


def execute_job(job: Job, via: str = "process", progress: bool = False, kernel_name: str | None = None,
                log_output: bool = False) -> dict:
    """Run one job in this process (``via="process"``, and for a stage without a notebook) or as
    its notebook; return its metrics."""
    if via == "process" or not job.notebook:
        try:
            return STAGES[job.kind][1](job.params, progress=progress)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            tail = "".join(traceback.format_exception(exc)[-3:]).strip()
            raise JobError(f"{job.describe()} failed: {type(exc).__name__}: {exc}\n{tail}", job) from exc
    source = NOTEBOOK_DIR / f"{job.notebook}.ipynb"
    target = executed_copy(job)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with kernel_environment():
            pm.execute_notebook(str(source), str(target), parameters=job.params.to_dict(),
                                kernel_name=kernel_name, progress_bar=False, log_output=log_output,
                                cwd=str(NOTEBOOK_DIR), extra_arguments=list(KERNEL_ARGUMENTS))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # papermill wraps the kernel's error: name the notebook and the cell
        if getattr(exc, "ename", None) == "KeyboardInterrupt":
            raise KeyboardInterrupt from None
        raise JobError(f"{job.describe()}: {describe_failure(exc, source)}\n  executed copy with the "
                       f"traceback: {target}", job, target) from None
    folder = RunFolder(job.run_dir)
    name = job.name()
    return folder.read_metrics(name) if folder.metrics_path(name).exists() else {}


@dataclass
class PlanOutcome:
    """What :func:`run_plan` did: jobs finished (or reused) with their metrics, failed (with the
    message), not started (a time limit, or a failed prerequisite), and per job a record."""

    done: list[tuple[Job, dict]] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    not_started: list[Job] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        lines = [f"{len(self.done)} jobs finished, {len(self.failed)} failed, {len(self.not_started)} not started "
                 f"({self.seconds:.0f} s)"]
        lines += [f"  FAILED {message}" for _, message in self.failed]
        return "\n".join(lines)


def ordered(jobs: Iterable[Job]) -> list[Job]:
    """``jobs`` deduplicated and ordered by prerequisites: folder by folder (first appearance),
    then by :data:`RANK`, plan order within a rank."""
    jobs = unique_jobs(jobs)
    folders = list(dict.fromkeys(j.run_dir for j in jobs))
    index = {j.key: i for i, j in enumerate(jobs)}
    return sorted(jobs, key=lambda j: (folders.index(j.run_dir), RANK[j.kind], index[j.key]))


def _check_plan_arguments(via: str, workers: Any, time_limit: Any, on_failure: str) -> None:
    if via not in VIA:
        raise ValueError(f"via={via!r} must be one of {VIA}")
    check_int("workers", workers, 1, " (worker processes)")
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ValueError(f"time_limit={time_limit!r} must be a number of seconds > 0, or None")
    if on_failure not in ("stop", "continue"):
        raise ValueError(f"on_failure={on_failure!r} must be 'stop' or 'continue'")


def run_plan(jobs: Iterable[Job], via: str = "process", workers: int = 1, time_limit: float | None = None,
             progress: bool = True, on_failure: str = "stop", on_done: Callable[[Job, dict, dict], None] | None = None,
             kernel_name: str | None = None, log_output: bool = False, scale: str | None = None) -> PlanOutcome:
    """Execute ``jobs`` (see the module docstring); ``on_done(job, metrics, record)`` is called in
    this process after each finished job. ``scale`` picks the live line's time estimates."""
    _check_plan_arguments(via, workers, time_limit, on_failure)
    plan = ordered(jobs)
    if workers == 1:
        return _run_here(plan, via, time_limit, progress, on_failure, on_done, kernel_name, log_output, scale)
    return _run_pool(plan, via, workers, time_limit, progress, on_failure, on_done)


def _waits(job: Job, plan: list[Job], ended: set[str]) -> bool:
    """Whether a job of a lower rank in ``job``'s folder has not ended yet."""
    return any(other.run_dir == job.run_dir and RANK[other.kind] < RANK[job.kind] and other.key not in ended
               for other in plan)


def _blocked(job: Job, plan: list[Job], ended: set[str], ok: set[str]) -> bool:
    """Whether a prerequisite of ``job`` in its folder ended without finishing."""
    return any(other.run_dir == job.run_dir and RANK[other.kind] < RANK[job.kind]
               and RANK[other.kind] <= PREREQUISITE_RANK and other.key in ended and other.key not in ok
               for other in plan)


def _run_here(plan, via, time_limit, progress, on_failure, on_done, kernel_name, log_output, scale) -> PlanOutcome:
    outcome, start = PlanOutcome(), time.perf_counter()
    ok: set[str] = set()
    ended: set[str] = set()
    folders = list(dict.fromkeys(j.run_dir for j in plan))
    # one folder: the chain's live line; several: a bar over jobs
    live = ChainProgress(RunFolder(folders[0]), [j.label or j.name() for j in plan], scale=scale,
                         enabled=progress) if len(folders) == 1 else None
    bar = tqdm(total=len(plan), desc="plan", unit="job", disable=not progress or live is not None)
    for job in plan:
        if (time_limit is not None and time.perf_counter() - start > time_limit) or _blocked(job, plan, ended, ok):
            outcome.not_started.append(job)
            ended.add(job.key)
            continue
        label = job.label or job.name()
        bar.set_postfix_str(job.describe())
        try:
            display = live.notebook(label) if live is not None else contextlib.nullcontext({})
            with display as info:
                started = time.perf_counter()
                metrics = execute_job(job, via=via, progress=progress and live is None and via == "process",
                                      kernel_name=kernel_name, log_output=log_output)
            record = {"label": label, "kind": job.kind, "notebook": job.notebook, "run_dir": job.run_dir,
                      "parameters": job.params.to_dict(),
                      "seconds": round(info.get("seconds", time.perf_counter() - started), 1),
                      **({"training": info["training"]} if "training" in info else {})}
        except KeyboardInterrupt:
            bar.close()
            target = executed_copy(job) if via == "notebook" else None
            raise JobInterrupted(f"interrupted (Ctrl-C) during {label}", job, target) from None
        except JobError as exc:
            outcome.failed.append((job, str(exc)))
            ended.add(job.key)
            bar.update(1)
            if on_failure == "stop":
                bar.close()
                outcome.seconds = time.perf_counter() - start
                outcome.not_started += [j for j in plan if j not in outcome.not_started and j is not job
                                        and j.key not in ok]
                raise
            continue
        ok.add(job.key)
        ended.add(job.key)
        outcome.done.append((job, metrics))
        outcome.records.append(record)
        bar.update(1)
        if on_done is not None:
            on_done(job, metrics, record)
    bar.close()
    outcome.seconds = time.perf_counter() - start
    return outcome


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _worker(job: Job, via: str) -> tuple[dict, float]:
    """Worker entry: one job; the error names it."""
    start = time.perf_counter()
    metrics = execute_job(job, via=via, progress=False)
    return metrics, time.perf_counter() - start


def _run_pool(plan, via, workers, time_limit, progress, on_failure, on_done) -> PlanOutcome:
    outcome, start = PlanOutcome(), time.perf_counter()
    late = (lambda: False) if time_limit is None else (lambda: time.perf_counter() - start > time_limit)
    order = {j.key: i for i, j in enumerate(plan)}
    ok: set[str] = set()
    ended: set[str] = set()
    blocked: list[Job] = []
    pending: dict[Future, Job] = {}
    bar = tqdm(total=len(plan), desc="plan", unit="job", disable=not progress)
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked

    def ready() -> list[Job]:
        running = {j.key for j in pending.values()}
        for j in plan:  # a failed prerequisite: its folder's later jobs never start
            if j.key not in ended and j.key not in running and _blocked(j, plan, ended, ok):
                ended.add(j.key)
                blocked.append(j)
        free = [j for j in plan if j.key not in ended and j.key not in running and not _waits(j, plan, ended)]
        return sorted(free, key=lambda j: (j.seed, order[j.key]))  # lowest seed first: whole seeds

    stopping = False
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        while True:
            if not stopping and not late():
                for job in ready()[: workers - len(pending)]:
                    pending[pool.submit(_worker, job, via)] = job
            if not pending:
                break
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                ended.add(job.key)
                bar.update(1)
                exc = future.exception()
                if exc is not None:
                    message = str(exc) if isinstance(exc, JobError) else f"{job.describe()}: {type(exc).__name__}: {exc}"
                    outcome.failed.append((job, message))
                    if not progress:
                        print(f"[{len(ended)}/{len(plan)} · {time.perf_counter() - start:.0f} s] FAILED {message}", flush=True)
                    stopping = stopping or on_failure == "stop"
                    continue
                metrics, seconds = future.result()
                ok.add(job.key)
                record = {"label": job.label or job.name(), "kind": job.kind, "notebook": job.notebook,
                          "run_dir": job.run_dir, "parameters": job.params.to_dict(), "seconds": round(seconds, 1)}
                outcome.done.append((job, metrics))
                outcome.records.append(record)
                if not progress:  # one line per finished job, for logs
                    print(f"[{len(ended)}/{len(plan)} · {time.perf_counter() - start:.0f} s] done {job.describe()}",
                          flush=True)
                if on_done is not None:
                    on_done(job, metrics, record)
    bar.close()
    outcome.not_started = blocked + [j for j in plan if j.key not in ended]
    outcome.seconds = time.perf_counter() - start
    if stopping and outcome.failed:
        job, message = outcome.failed[0]
        raise JobError(message, job)
    return outcome
