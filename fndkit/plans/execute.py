"""One unit of work and one executor: a :class:`Job` is a stage's typed ``Params``; :func:`run_plan`
runs a list of them with one set of rules, whoever does the work.

Every verb is a plan builder (:mod:`fndkit.plans`: chain, paper, search, lab, distill) whose jobs run
here; a *dispatcher* decides where each ready job runs:

- :class:`Local` (``workers`` processes on this machine; one: in this process), or
- :class:`fndkit.plans.study.Study`: the Optuna study storage (a journal file, or PostgreSQL shared
  by several machines) holds the plan's jobs as trials; every worker — on any machine — runs the
  same plan and takes whichever trial waits.

The rules are the same for both:

- ``via="process"`` calls the stage's ``execute(params)``; ``via="notebook"`` executes the stage's
  notebook with ``params.to_dict()`` as its papermill parameters, whose cell builds the same
  ``Params`` and calls the same ``execute`` — so the two paths write the same ``metrics.json``.
- Order by prerequisites, per run folder: data → autoencoder → teacher → students (student,
  contrastive, baseline) → diagnostics (false negatives, explorer) → cold start (``rank`` of
  :data:`KINDS`). A job starts when every job of a lower rank *that it stands on* in its folder has
  ended: a student that needs no teacher (N-pair, BPR, a baseline) does not wait for it. When a
  prerequisite (data, autoencoder, pre-training, teacher) failed, the folder's later jobs do not
  start; a failed student still lets the diagnostics and cold start run on the rest.
- Duplicates (the same kind and parameters: :attr:`Job.key`) run once.
- Resumable: each stage reuses its finished folder when the configuration is the same, and a
  partial training stage resumes from its ``last.pt``; so a rerun of an interrupted plan continues.
- ``time_limit``: no job starts after that many seconds; lowest seed first, so a plan cut short
  leaves whole seeds.
- A failing job is named with its executed notebook (``via="notebook"``) or the last lines of its
  traceback; ``on_failure="stop"`` raises :class:`JobError`, ``"continue"`` runs the rest.
- One record per plan root (``record=``): ``plan.json`` with every job's status and seconds.
- A *trial* job (``Job.trial`` names its search) trains on the training split and is scored on the
  student's validation half only (the test candidates are never scored): see
  :mod:`fndkit.plans.search`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import papermill as pm
import torch
from tqdm.auto import tqdm

from ..artifacts import write_json
from ..config import check_int
from ..objectives import NEEDS_TEACHER
from ..progress import ChainProgress
from ..rundir import RunFolder, resolve_path
from ..stages import autoencoder, cold_start, data, false_negatives, naming, pretrain, training
from ..stages.params import StageParams
from ..viz import explorer

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent.parent / "notebooks"
# The kernel logs "Kernel is running over TCP without encryption" (and a KeyboardInterrupt line at
# shutdown) on the console for every notebook; its own errors still reach the notebook's cells.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=CRITICAL",)
# OpenMP threads that wait for work by spinning (libgomp's default) turn a 2-core machine that is
# also doing something else into a crawl: with other jobs running, a training step took 4-5x as
# long as with passive waiting (README, "make demo"). A setting of the user's own wins.
KERNEL_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


class Kind(NamedTuple):
    """A stage kind: its Params (the notebook's cell), ``execute(params, progress) -> metrics``,
    its rank in a run folder's order, and whether it trains a model."""

    params: type[StageParams]
    execute: Callable[..., dict]
    rank: int
    trains: bool = False


# The one table of stage kinds.
KINDS: dict[str, Kind] = {
    "data": Kind(data.Params, data.execute, 0),
    "autoencoder": Kind(autoencoder.Params, autoencoder.execute, 1),
    "pretrain": Kind(pretrain.Params, pretrain.execute, 1),
    "teacher": Kind(training.TeacherParams, training.execute, 2, True),
    "student": Kind(training.StudentParams, training.execute, 3, True),
    "contrastive": Kind(training.ContrastiveParams, training.execute, 3, True),
    "baseline": Kind(training.BaselineParams, training.execute, 3, True),
    "false_negatives": Kind(false_negatives.Params, false_negatives.execute, 4),
    "explorer": Kind(explorer.Params, explorer.execute, 4),
    "cold_start": Kind(cold_start.Params, cold_start.execute, 5),
}
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
    if kind not in KINDS:
        raise ValueError(f"stage kind {kind!r} is unknown; choose one of {', '.join(KINDS)}")
    return KINDS[kind].params.from_dict(values)


@dataclass(frozen=True)
class Job:
    """One stage to run: its typed parameters; for results, the experiment and method it stands for
    and the settings it varies (``shown``); ``trial``: the search it is a trial of ("" for none);
    ``label``: its name in logs and of its executed notebook (default: its stage). Its stage folder is ``params.out_name`` (training stages, named by :mod:`fndkit.stages.naming`)
    or its kind's folder."""

    params: StageParams
    label: str = field(default="", compare=False)
    method: str = field(default="", compare=False)
    shown: dict = field(default_factory=dict, compare=False)
    experiment: str = field(default="", compare=False)
    trial: str = ""

    def __post_init__(self):
        if not isinstance(self.params, StageParams) or self.params.kind not in KINDS:
            raise TypeError(f"Job needs a stage's Params (one of {', '.join(KINDS)}), got {self.params!r}")

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
    def rank(self) -> int:
        return KINDS[self.kind].rank

    @property
    def key(self) -> str:
        """Kind, parameters (run folder resolved) and trial: two jobs with one key are one job."""
        values = {**self.params.to_dict(), "run_dir": self.run_dir}
        return json.dumps({"kind": self.kind, "params": values, "trial": self.trial}, sort_keys=True, default=str)

    @property
    def seed(self) -> int:
        return int(getattr(self.params, "seed", 0) or 0)

    @property
    def stage(self) -> str:
        """The stage folder this job fills (:func:`fndkit.stages.naming.stage_of`)."""
        return naming.stage_of(self.params)

    def needs(self, other: "Job") -> bool:
        """Whether this job stands on ``other``: same folder and a lower rank (a student that reads
        no teacher does not stand on the teacher), or the pre-training whose weights a teacher
        starts from (one pre-training may serve every seed's folder)."""
        if other.kind == "pretrain" and self.kind == "teacher":  # a pre-training may serve other folders
            return str(getattr(self.params, "weights", "")) == str(pretrain.weights_path(other.run_dir,
                                                                                          other.params.backbone))
        if other.run_dir != self.run_dir or other.rank >= self.rank:
            return False
        if other.kind == "teacher" and self.kind in ("student", "baseline") and not self.uses_teacher():
            return False
        return True

    def uses_teacher(self) -> bool:
        if self.kind == "baseline":
            return False
        return getattr(self.params, "loss", "fnd") in NEEDS_TEACHER  # student, contrastive

    def with_params(self, **changes) -> "Job":
        return dataclasses.replace(self, params=self.params.replace(**changes))

    def describe(self) -> str:
        """``<run folder>/<stage>`` for logs."""
        return "/".join([*Path(self.run_dir).parts[-2:], self.stage])


def unique_jobs(jobs: Iterable[Job]) -> list[Job]:
    """``jobs`` without repeats (same key), first occurrence kept."""
    seen: dict[str, Job] = {}
    for job in jobs:
        seen.setdefault(job.key, job)
    return list(seen.values())


def ordered(jobs: Iterable[Job]) -> list[Job]:
    """``jobs`` deduplicated and ordered by prerequisites: folder by folder (first appearance),
    then by rank, plan order within a rank."""
    jobs = unique_jobs(jobs)
    folders = list(dict.fromkeys(j.run_dir for j in jobs))
    index = {j.key: i for i, j in enumerate(jobs)}
    return sorted(jobs, key=lambda j: (folders.index(j.run_dir), j.rank, index[j.key]))


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


def executed_copy(job: Job, label: str | None = None) -> Path:
    """Where ``via="notebook"`` saves the executed notebook: ``<run folder>/notebooks/<label>``."""
    return RunFolder(job.run_dir).notebooks_dir / f"{label or job.stage}.ipynb"


def execute_job(job: Job, via: str = "process", progress: bool = False, kernel_name: str | None = None,
                log_output: bool = False, label: str | None = None, **options) -> dict:
    """Run one job in this process (``via="process"``, a trial, and a stage without a notebook) or
    as its notebook; return its metrics. ``options`` go to the stage's ``execute`` (callbacks)."""
    if job.trial:  # validation only: the test candidates are never scored for a trial
        options = {"evaluate_test": False, "tensorboard": True, **options}
    if via == "process" or not job.notebook or options:
        try:
            return KINDS[job.kind].execute(job.params, progress=progress, **options)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            tail = "".join(traceback.format_exception(exc)[-3:]).strip()
            raise JobError(f"{job.describe()} failed: {type(exc).__name__}: {exc}\n{tail}", job) from exc
    run_notebook(job.notebook, executed_copy(job, label), job.params.notebook_parameters(), job.describe(), job,
                 kernel_name, log_output)
    folder = RunFolder(job.run_dir)
    return folder.read_metrics(job.stage) if folder.metrics_path(job.stage).exists() else {}


def run_notebook(name: str, target: Path, parameters: dict, what: str, job: Job | None = None,
                 kernel_name: str | None = None, log_output: bool = False) -> None:
    """``notebooks/<name>.ipynb`` executed by papermill into ``target`` (from the notebooks folder, in
    the kernels' environment); a failure is a :class:`JobError` naming ``what``, the cell and the
    executed copy that holds the traceback."""
    source = NOTEBOOK_DIR / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with kernel_environment():
            pm.execute_notebook(str(source), str(target), parameters=parameters, kernel_name=kernel_name,
                                progress_bar=False, log_output=log_output, cwd=str(NOTEBOOK_DIR),
                                extra_arguments=list(KERNEL_ARGUMENTS))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # papermill wraps the kernel's error: name the notebook and the cell
        if getattr(exc, "ename", None) == "KeyboardInterrupt":
            raise KeyboardInterrupt from None
        raise JobError(f"{what}: {describe_failure(exc, source)}\n  executed copy with the traceback: {target}",
                       job, target) from None


RESULTS_NOTEBOOK = "09_results"


def execute_results_notebook(root: str | os.PathLike, kernel_name: str | None = None) -> Path:
    """``notebooks/09_results.ipynb`` executed on a plan's report folder (``root``, where
    ``write_plan_report`` wrote) into ``<root>/09_results.ipynb``, written atomically: the plan's
    tables and figures as a notebook beside ``report.html``. A failure raises :class:`JobError`
    naming the cell; the previous copy, if any, is kept."""
    root = resolve_path(root)
    partial = root / f".{RESULTS_NOTEBOOK}.partial.ipynb"   # papermill saves as it goes: renamed when whole
    run_notebook(RESULTS_NOTEBOOK, partial, {"root": str(root)}, f"the results notebook on {root}",
                 kernel_name=kernel_name)
    target = root / f"{RESULTS_NOTEBOOK}.ipynb"
    os.replace(partial, target)
    return target


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

    def statuses(self) -> dict[str, str]:
        out = {j.key: "done" for j, _ in self.done}
        out.update({j.key: "failed" for j, _ in self.failed})
        out.update({j.key: "not started" for j in self.not_started})
        return out


class Ended(NamedTuple):
    """A job that ended: its metrics (None when it failed), the failure message, its seconds, and
    the training summary of the live line (chain only)."""

    job: Job
    metrics: dict | None
    error: str | None
    seconds: float
    info: dict = {}
    exc: BaseException | None = None


def _check_plan_arguments(via: str, time_limit: Any, on_failure: str) -> None:
    if via not in VIA:
        raise ValueError(f"via={via!r} must be one of {VIA}")
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ValueError(f"time_limit={time_limit!r} must be a number of seconds > 0, or None")
    if on_failure not in ("stop", "continue"):
        raise ValueError(f"on_failure={on_failure!r} must be 'stop' or 'continue'")


class Schedule:
    """The plan's rules, whoever runs the jobs: what is ready, what waits, what is blocked."""

    def __init__(self, plan: list[Job]):
        self.plan = plan
        self.order = {j.key: i for i, j in enumerate(plan)}
        self.ok: set[str] = set()
        self.ended: set[str] = set()
        self.running: set[str] = set()
        self.blocked: list[Job] = []

    def blocks(self, job: Job) -> bool:
        """Whether a prerequisite of ``job`` in its folder ended without finishing."""
        return any(job.needs(o) and o.rank <= PREREQUISITE_RANK and o.key in self.ended and o.key not in self.ok
                   for o in self.plan)

    def waits(self, job: Job) -> bool:
        return any(job.needs(o) and o.key not in self.ended for o in self.plan)

    def ready(self) -> list[Job]:
        """Jobs that may start now, lowest seed first (a plan cut short leaves whole seeds);
        jobs a failed prerequisite blocks are moved to :attr:`blocked`."""
        for j in self.plan:
            if j.key not in self.ended and j.key not in self.running and self.blocks(j):
                self.ended.add(j.key)
                self.blocked.append(j)
        free = [j for j in self.plan if j.key not in self.ended and j.key not in self.running and not self.waits(j)]
        return sorted(free, key=lambda j: (j.seed, self.order[j.key]))

    def finished(self) -> bool:
        return all(j.key in self.ended for j in self.plan)

    def end(self, job: Job, ok: bool) -> None:
        self.running.discard(job.key)
        self.ended.add(job.key)
        if ok:
            self.ok.add(job.key)


@dataclass
class Local:
    """Run jobs on this machine: ``workers`` processes (spawned, so CUDA works), or this process
    when ``workers`` is 1. ``threads``: torch threads per job (default: the cores shared evenly;
    pass a number to make results independent of the worker count)."""

    workers: int = 1
    threads: int | None = None

    def __post_init__(self):
        check_int("workers", self.workers, 1, " (worker processes)")
        if self.threads is not None:
            check_int("threads", self.threads, 1, " (torch threads per job)")

    def capacity(self) -> int:
        return self.workers

    def open(self, plan: list[Job], via: str, options: dict) -> "_LocalSession":
        return _LocalSession(self, via, options)


class _LocalSession:
    def __init__(self, local: Local, via: str, options: dict):
        self.local, self.via, self.options = local, via, options
        self.pending: dict[Future, tuple[Job, float]] = {}
        self.queue: list[Job] = []
        self.pool = None
        if local.workers > 1:
            threads = local.threads or max(1, (os.cpu_count() or 1) // local.workers)
            self.pool = ProcessPoolExecutor(max_workers=local.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(threads,))
            self.options = {**options, "threads": threads}
        self.restore = None
        if local.workers == 1 and local.threads:  # this process: set for the plan, restored by close()
            self.restore = torch.get_num_threads()
            torch.set_num_threads(local.threads)

    def sync(self, schedule: Schedule) -> list[Ended]:
        return []

    def submit(self, jobs: list[Job], schedule: Schedule) -> None:
        free = self.local.workers - len(self.pending) - len(self.queue)
        for job in jobs[:max(free, 0)]:
            schedule.running.add(job.key)
            if self.pool is None:
                self.queue.append(job)
            else:
                self.pending[self.pool.submit(_worker, job, self.via, self.options)] = (job, time.perf_counter())

    def busy(self) -> bool:
        return bool(self.pending or self.queue)

    def next(self, live=None) -> list[Ended]:
        if self.pool is None:
            job = self.queue.pop(0)
            display = live.notebook(_label(job)) if live else contextlib.nullcontext({})
            started = time.perf_counter()
            with display as info:
                try:
                    metrics = execute_job(job, via=self.via, progress=self.options.get("progress", False),
                                          kernel_name=self.options.get("kernel_name"),
                                          log_output=self.options.get("log_output", False), label=_label(job))
                except KeyboardInterrupt:
                    target = executed_copy(job, _label(job)) if self.via == "notebook" else None
                    raise JobInterrupted(f"interrupted (Ctrl-C) during {_label(job)}", job, target) from None
                except JobError as exc:
                    return [Ended(job, None, str(exc), time.perf_counter() - started, {}, exc)]
            seconds = info.get("seconds", time.perf_counter() - started)
            return [Ended(job, metrics, None, seconds, {k: info[k] for k in ("training",) if k in info})]
        done, _ = wait(list(self.pending), return_when=FIRST_COMPLETED)
        out = []
        for future in done:
            job, started = self.pending.pop(future)
            exc = future.exception()
            if exc is not None:
                message = str(exc) if isinstance(exc, JobError) else f"{job.describe()}: {type(exc).__name__}: {exc}"
                out.append(Ended(job, None, message, time.perf_counter() - started, {},
                                 exc if isinstance(exc, JobError) else None))
            else:
                out.append(Ended(job, future.result(), None, time.perf_counter() - started))
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.restore is not None:
            torch.set_num_threads(self.restore)


def _label(job: Job) -> str:
    """A job's name in logs and of its executed notebook: its label, else its stage."""
    return job.label or job.stage


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _worker(job: Job, via: str, options: dict) -> dict:
    """Worker entry: one job; the error names it. A notebook's kernel is another process: it gets
    the worker's thread count through the environment."""
    threads = str(options.get("threads", 1))
    with kernel_environment({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}):
        return execute_job(job, via=via, progress=False, kernel_name=options.get("kernel_name"),
                           log_output=options.get("log_output", False), label=_label(job))


class _Run:
    """One run of a plan: its outcome, its record file and what it shows while it runs."""

    def __init__(self, plan: list[Job], schedule: Schedule, record, progress, live, bar, on_done, on_failure):
        self.plan, self.schedule, self.record, self.progress = plan, schedule, record, progress
        self.live, self.bar, self.on_done, self.on_failure = live, bar, on_done, on_failure
        self.outcome, self.start, self.errors = PlanOutcome(), time.perf_counter(), {}
        self.stopping, self.recorded = False, 0
        # One record per plan root: earlier calls (a rerun, a searched plan's first phase) left its wall
        # time and the jobs this call does not run, which the record keeps.
        self.prior, self.kept = 0.0, []
        if record is not None and Path(record).exists():
            with contextlib.suppress(Exception):
                before = json.loads(Path(record).read_text())
                self.prior = float(before.get("seconds_total", 0.0))
                keys = {j.key for j in plan}
                self.kept = [e for e in before.get("jobs", []) if e.get("key") and e["key"] not in keys]

    def ended(self, ended: Ended) -> None:
        job = ended.job
        self.schedule.end(job, ended.error is None)
        self.bar.update(1)
        if self.progress is True and self.live is None:
            running = [j.stage for j in self.plan if j.key in self.schedule.running]
            self.bar.set_postfix_str((f"FAILED {job.stage}; " if ended.error else "")
                                     + ("running " + ", ".join(running) if running else "")[:70])
        elif self.progress is False:  # a log: one line per job ("quiet": nothing, e.g. a worker child)
            print(f"[{len(self.schedule.ended)}/{len(self.plan)} · {time.perf_counter() - self.start:.0f} s] "
                  f"{'FAILED' if ended.error else 'done'} {job.describe()}", flush=True)
        if ended.error is not None:
            self.outcome.failed.append((job, ended.error))
            self.errors[job.key] = ended.exc
            self.stopping = self.stopping or self.on_failure == "stop"
            return
        rec = {"key": job.key, "label": _label(job), "stage": job.stage, "kind": job.kind, "notebook": job.notebook,
               "run_dir": job.run_dir, "parameters": job.params.to_dict(), "seconds": round(ended.seconds, 1),
               **ended.info}
        self.outcome.done.append((job, ended.metrics or {}))
        self.outcome.records.append(rec)
        if self.on_done is not None and ended.metrics is not None:
            self.on_done(job, ended.metrics, rec)

    def write(self, status: str | None = None) -> None:
        """The plan's record (``plan.json``), rewritten whenever a job ends."""
        count = len(self.outcome.records) + len(self.outcome.failed)
        if self.record is None or (status is None and count == self.recorded):
            return
        self.recorded, statuses = count, self.outcome.statuses()
        records = {r["key"]: r for r in self.outcome.records}
        seconds = time.perf_counter() - self.start
        write_json(Path(self.record), {
            "status": status or "running", "seconds": round(seconds, 1),
            "seconds_total": round(self.prior + seconds, 1),
            "jobs": self.kept + [{"key": j.key, "stage": j.stage, "kind": j.kind, "run_dir": j.run_dir,
                                  "trial": j.trial, "status": statuses.get(
                                      j.key, "running" if j.key in self.schedule.running else "waiting"),
                                  **records.get(j.key, {})} for j in self.plan]})

    def finish(self) -> PlanOutcome:
        outcome = self.outcome
        outcome.not_started = self.schedule.blocked + [j for j in self.plan if j.key not in self.schedule.ended]
        outcome.seconds = time.perf_counter() - self.start
        self.write("failed" if outcome.failed else "finished" if not outcome.not_started else "partial")
        if self.stopping and outcome.failed:
            job, message = outcome.failed[0]
            raise JobError(message, job, getattr(self.errors.get(job.key), "executed_copy", None))
        return outcome


def run_plan(jobs: Iterable[Job], via: str = "process", dispatch=None, time_limit: float | None = None,
             progress: bool = True, on_failure: str = "stop", on_done: Callable[[Job, dict, dict], None] | None = None,
             kernel_name: str | None = None, log_output: bool = False, scale: str | None = None,
             record: str | os.PathLike | None = None, workers: int | None = None) -> PlanOutcome:
    """Execute ``jobs`` (see the module docstring) with ``dispatch`` (:class:`Local` by default;
    ``workers=K`` is short for ``Local(K)``). ``on_done(job, metrics, record)`` is called in this
    process after each job this process saw finish. ``progress``: True a live line (one folder, one
    worker) or a bar naming the running jobs; False one line per job (logs); "quiet" nothing.
    ``scale`` picks the live line's time estimates; ``record``: the plan's record file (``plan.json``)."""
    _check_plan_arguments(via, time_limit, on_failure)
    if dispatch is None:
        dispatch = Local(workers or 1)
    elif workers is not None:
        raise ValueError("pass workers inside the dispatcher (Local(workers) or Study(..., workers)), not both")
    plan = ordered(jobs)
    schedule = Schedule(plan)
    folders = list(dict.fromkeys(j.run_dir for j in plan))
    chain_view = len(folders) == 1 and dispatch.capacity() == 1 and isinstance(dispatch, Local)
    options = {"kernel_name": kernel_name, "log_output": log_output, "progress": progress is True
               and not chain_view and via == "process" and dispatch.capacity() == 1}
    session = dispatch.open(plan, via, options)  # a storage that cannot be opened: refused before any output
    live = ChainProgress(RunFolder(folders[0]), [_label(j) for j in plan], scale=scale,
                         enabled=progress is True) if chain_view and plan else None
    bar = tqdm(total=len(plan), desc="plan", unit="job", disable=progress is not True or live is not None,
               dynamic_ncols=True)
    run = _Run(plan, schedule, record, progress, live, bar, on_done, on_failure)
    late = (lambda: False) if time_limit is None else (lambda: time.perf_counter() - run.start > time_limit)
    try:
        while True:
            events = session.sync(schedule)
            ready = schedule.ready()
            if not run.stopping and not late():
                session.submit(ready, schedule)
            if not events and not session.busy():
                break
            for ended in events or session.next(live):
                run.ended(ended)
            run.write()
    except JobInterrupted:
        run.write("interrupted")
        raise
    finally:
        session.close()
        bar.close()
    return run.finish()
