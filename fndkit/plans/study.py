"""The Optuna study storage as a dispatcher of :func:`fndkit.plans.execute.run_plan`.

``run_plan(jobs, dispatch=Study(root))`` keeps the executor's rules (per-folder prerequisites,
dedupe, blocked folders, time limit, one record) and hands each ready job to the storage instead of
a local pool: the job becomes a trial (its parameters in the trial's user attributes), and every
worker running the same plan — this process, ``workers - 1`` local children, or the same command
on other machines sharing ``--storage postgresql://…`` — pops whichever trial waits (Optuna sets a
trial RUNNING only if it still is WAITING, so one worker gets it) and runs it. A job's state is its
latest trial's: so every worker sees the same plan advance, and a rerun of the command continues.

- Storage: by default a journal file, ``<root>/optuna.journal`` (no service); several machines
  share one database with ``storage="postgresql://…"`` (SQLAlchemy + psycopg2) or ``sqlite:///``.
- Studies: ``<prefix>:jobs`` for fixed jobs; ``<prefix>:search-<name>`` for the trials of one
  search (:mod:`fndkit.plans.search`), whose values are Optuna parameters (its plots and
  importance work) and which a median pruner may stop (:class:`PruneOnValidation`, from epoch
  ``PRUNER_WARMUP`` + 1 after ``PRUNER_STARTUP`` finished trials). A study belongs to the plan
  that created it (``identity``); another plan is refused by name.
- Enqueueing is serialised (a flock beside a journal, an advisory lock on PostgreSQL), so a job
  is enqueued once; were it enqueued twice (another database) it would still train once: the
  second worker reuses the finished stage.
- Faults: a worker killed (SIGKILL, a lost node) leaves its trial RUNNING. Our rule is the stage
  folder's claim rule (:mod:`fndkit.rundir`) applied to the worker that popped the trial: on the
  same host the trial is stale when that pid is gone; on another host when its heartbeat (refreshed
  every ``HEARTBEAT_S``) is older than the claim lease — unless the stage folder is claimed by a
  live process. Any waiting worker marks a stale trial FAIL (``stale`` says why) and enqueues the
  same job again; the next worker takes the stage's abandoned claim over and resumes from its
  ``last.pt``. A FAIL of an earlier command is tried again by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import multiprocessing
import os
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from ..rundir import CLAIM_LEASE_S, RunFolder, claim_holder, process_alive, process_start
from .execute import Ended, Job, JobError, JobInterrupted, Schedule, execute_job, params_for

JOURNAL = "optuna.journal"
HEARTBEAT_S = 10.0                 # a worker refreshes its trial's heartbeat this often
POLL_S = 1.0                       # a worker waiting for others' jobs looks again this often
PRUNER_STARTUP = 2                 # finished trials before the median pruner prunes anything
PRUNER_WARMUP = 2                  # epochs a trial always trains: the first epochs' AUC is mostly noise
ENQUEUE_LOCK_KEY = 22_0_22         # PostgreSQL advisory lock id of fndkit's enqueuers
optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyError(ValueError):
    """Bad input to the study storage (named, with the fix), found before any training."""


# ------------------------------------------------------------------------------------------------
# Storage and studies

def open_storage(url: str | None, folder: Path):
    """The plan's study storage: a journal file in ``folder`` by default (or at a path ending in
    ``.journal``), else a database URL (``postgresql://``, ``sqlite:///``)."""
    if url in (None, "", "journal"):
        folder.mkdir(parents=True, exist_ok=True)
        return _journal(folder / JOURNAL)
    parsed = urllib.parse.urlsplit(url)
    shown = shown_url(url)
    if not parsed.scheme and url.endswith(".journal"):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return _journal(Path(url))
    if parsed.scheme.split("+")[0] not in ("postgresql", "sqlite", "mysql"):
        raise StudyError(f"--storage {shown!r} is not a storage: use postgresql://USER:PASSWORD@HOST:PORT/DB, "
                         f"sqlite:///PATH.db, a PATH.journal file, or leave it out (a journal file under the "
                         f"plan's folder)")
    if parsed.scheme.startswith("postgresql") and (not parsed.hostname or not parsed.path.strip("/")):
        raise StudyError(f"--storage {shown!r} names no host or database: use "
                         f"postgresql://USER:PASSWORD@HOST:PORT/DB")
    kwargs = {"connect_args": {"connect_timeout": 5}} if parsed.scheme.startswith("postgresql") else {}
    if parsed.scheme == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3; the pinned driver is psycopg2
        url = "postgresql+psycopg2" + url[len("postgresql"):]
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # the driver's own error, first line: refused connection, bad password …
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudyError(f"--storage {shown!r} is unreachable ({type(exc).__name__}: {first}); start the "
                         f"database or fix the URL (host, port, user, password, database)") from None


def _journal(path: Path):
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def shown_url(url: str) -> str:
    """``url`` with its password hidden (error messages, logs)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def open_study(storage, name: str, identity: dict, prune: bool = False) -> optuna.Study:
    """Study ``name`` (created when missing), checked to belong to the plan ``identity``."""
    # Optuna may prune at step n_warmup_steps itself: + 1 so that PRUNER_WARMUP epochs always train
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP, n_warmup_steps=PRUNER_WARMUP + 1)
              if prune else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                pruner=pruner)
    owner = study.user_attrs.get("plan")
    if owner is None:
        study.set_user_attr("plan", identity)
    elif owner != identity:
        diff = ", ".join(f"{k} {owner.get(k)!r} there, {identity.get(k)!r} here" for k in sorted(identity)
                         if owner.get(k) != identity.get(k))
        raise StudyError(f"study {name!r} in this storage was created by another plan ({diff}); pass "
                         f"--study-prefix NAME for a new set of studies, or run that plan's command")
    return study


@contextlib.contextmanager
def enqueue_lock(storage):
    """Workers enqueue one after the other: a flock beside a journal file, an advisory lock on
    PostgreSQL."""
    # a study wraps an RDBStorage in Optuna's cache: its database is the wrapped one's
    engine = getattr(storage, "engine", None) or getattr(getattr(storage, "_backend", None), "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.connect() as conn:  # a session-level lock: held by this connection until unlocked
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ENQUEUE_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ENQUEUE_LOCK_KEY})
        return
    path = getattr(getattr(storage, "_backend", None), "_file_path", None)
    if path is None:
        yield
        return
    with open(f"{path}.enqueue.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------
# Jobs as trials

def job_record(job: Job) -> dict:
    return {"kind": job.kind, "params": job.params.to_dict(), "label": job.label, "method": job.method,
            "shown": job.shown, "experiment": job.experiment, "trial": job.trial}


def job_from(record: dict) -> Job:
    return Job(params_for(record["kind"], **record["params"]), label=record.get("label", ""),
               method=record.get("method", ""), shown=record.get("shown", {}),
               experiment=record.get("experiment", ""), trial=record.get("trial", ""))


def job_id(job: Job) -> str:
    return hashlib.sha1(job.key.encode()).hexdigest()[:16]


@dataclass
class Worker:
    """One worker's identity on its trials."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def record(self) -> dict:
        return {"host": self.host, "pid": self.pid, "pid_start": process_start(self.pid)}


class _Heartbeat:
    """Refresh ``heartbeat`` in a trial every :data:`HEARTBEAT_S` while the worker runs it."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"trial {trial_id} heartbeat")

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a finished trial, a storage hiccup: the next beat
                self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def stale_reason(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a RUNNING trial's worker is gone (None while it lives): the module docstring's rule."""
    worker = trial.user_attrs.get("worker")
    stage_dir = trial.user_attrs.get("stage_dir")
    if stage_dir:
        holder = claim_holder(Path(stage_dir))
        if holder is not None and not holder.get("stale"):
            return None  # a live process trains the stage (its worker, or one it waits for)
    if worker is None:  # popped, not yet marked: give it the lease
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        age = time.time() - started
        return f"no worker recorded for {age:.0f} s" if age > CLAIM_LEASE_S else None
    if worker["host"] == socket.gethostname():
        if worker["pid"] == os.getpid():
            return None
        return None if process_alive(worker["pid"], worker.get("pid_start")) else \
            f"worker pid {worker['pid']} on {worker['host']} is no longer running"
    age = time.time() - float(trial.user_attrs.get("heartbeat", 0.0))
    return (f"worker {worker['pid']}@{worker['host']} sent no heartbeat for {age:.0f} s (lease "
            f"{CLAIM_LEASE_S:.0f} s)") if age > CLAIM_LEASE_S else None


def reclaim_stale(study: optuna.Study) -> int:
    """Fail each stale RUNNING trial of ``study`` and enqueue its job again; how many."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial)
        if reason is None:
            continue
        try:  # only one detector wins: a finished trial refuses the update
            study._storage.set_trial_user_attr(trial._trial_id, "stale", reason)
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue
        params = trial.system_attrs.get("fixed_params", trial.params)
        kept = {k: v for k, v in trial.user_attrs.items() if k in ("id", "job", "space")}
        study.enqueue_trial(params, user_attrs={**kept, "resumed_from_trial": trial.number})
        print(f"{study.study_name}: trial {trial.number} ({trial.user_attrs['job'].get('label') or 'job'}) was "
              f"abandoned ({reason}); enqueued again, it resumes from its last.pt", flush=True)
        count += 1
    return count


class PruneOnValidation:
    """fit() callback: each epoch's validation AUC to the trial; a pruned trial stops training."""

    def __init__(self, trial: optuna.Trial):
        self.trial, self.pruned_at = trial, None

    def on_fit_start(self, t):
        pass

    def on_batch_end(self, t):
        pass

    def on_epoch_end(self, t):
        epoch = t.record["epoch"]
        self.trial.report(float(t.record["val_auc"]), epoch)
        if self.trial.should_prune():
            self.pruned_at, t.should_stop = epoch, True

    def on_fit_end(self, t):
        pass


# ------------------------------------------------------------------------------------------------
# The dispatcher

@dataclass
class Study:
    """Hand a plan's jobs to the study storage (see the module docstring). ``root``: where the
    journal file lives when ``storage`` is None; ``identity``: what makes two plans one (a study
    created by another plan is refused); ``workers``: worker processes on this machine (this one
    and ``workers - 1`` children, each running the same plan); ``threads``: torch threads per
    worker (default: the cores shared evenly)."""

    root: str | os.PathLike
    storage: str | None = None
    prefix: str = "fndkit"
    identity: dict = field(default_factory=dict)
    workers: int = 1
    threads: int | None = None
    prune: bool = True

    def __post_init__(self):
        if not isinstance(self.workers, int) or self.workers < 1:
            raise StudyError(f"workers={self.workers!r} must be an integer >= 1")

    def capacity(self) -> int:
        return self.workers

    def check(self, groups=()) -> None:
        """Everything that can be refused before training: the storage, every study's owner."""
        storage = open_storage(self.storage, Path(self.root))
        for name in ["jobs", *(f"search-{g}" for g in groups)]:
            open_study(storage, f"{self.prefix}:{name}", self.identity)

    def open(self, plan: list[Job], via: str, options: dict) -> "_StudySession":
        return _StudySession(self, plan, via, options)


def _child(jobs: list[Job], via: str, study: Study, threads: int) -> None:
    from .execute import run_plan

    torch.set_num_threads(threads)
    run_plan(jobs, via=via, dispatch=Study(study.root, study.storage, study.prefix, study.identity, 1,
                                           threads, study.prune), progress="quiet", on_failure="continue")


def worker_context():
    """Worker processes forked from a server that imported fndkit once (no CUDA in it, so the
    children may use the GPU), instead of each importing torch, Optuna and plotly afresh."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["fndkit.plans.study"])
    return context


class _StudySession:
    def __init__(self, study: Study, plan: list[Job], via: str, options: dict):
        self.config, self.plan, self.via, self.options = study, plan, via, options
        self.storage = open_storage(study.storage, Path(study.root))
        self.started = time.time()
        self.worker = Worker()
        self.ids = {job_id(j): j for j in plan}
        groups = list(dict.fromkeys(j.trial for j in plan if j.trial))
        self.studies = {"": open_study(self.storage, f"{study.prefix}:jobs", study.identity)}
        for g in groups:
            self.studies[g] = open_study(self.storage, f"{study.prefix}:search-{g}", study.identity, prune=study.prune)
        # each search's space, as Optuna records it: the values its trial jobs take, in plan order
        self.spaces: dict[str, dict[str, list]] = {}
        for j in plan:
            if j.trial:
                for k, v in j.shown.items():
                    values = self.spaces.setdefault(j.trial, {}).setdefault(k, [])
                    if v not in values:
                        values.append(v)
        self.present: set[str] = set()      # ids with a live (waiting / running / finished) trial
        self.active = False                 # some plan trial waits or runs (any worker)
        self.reported: set[str] = set()     # ids whose end this session has reported
        self.children = []
        threads = study.threads or max(1, (os.cpu_count() or 1) // study.workers)
        if study.workers > 1:
            context = worker_context()
            self.children = [context.Process(target=_child, args=(plan, via, study, threads), daemon=False)
                             for _ in range(study.workers - 1)]
            for child in self.children:
                child.start()
        self.restore = None
        if study.threads or study.workers > 1:  # this process: set for the plan, restored by close()
            self.restore = torch.get_num_threads()
            torch.set_num_threads(threads)

    def _latest(self) -> dict[str, optuna.trial.FrozenTrial]:
        latest: dict[str, optuna.trial.FrozenTrial] = {}
        for study in self.studies.values():
            for t in study.get_trials(deepcopy=False):
                i = t.user_attrs.get("id")
                if i in self.ids and (i not in latest or t.number > latest[i].number):
                    latest[i] = t
        return latest

    def sync(self, schedule: Schedule) -> list[Ended]:
        """The storage's view: jobs other workers (or an earlier command) ended, what waits or runs."""
        events, self.present, self.active = [], set(), False
        for i, t in self._latest().items():
            job = self.ids[i]
            if t.state in (TrialState.WAITING, TrialState.RUNNING):
                self.present.add(i)
                self.active = True
                schedule.running.add(job.key)
                continue
            old_failure = t.state == TrialState.FAIL and (
                "stale" in t.user_attrs or (t.datetime_complete and t.datetime_complete.timestamp() < self.started))
            if old_failure or i in self.reported or job.key in schedule.ended:
                continue
            self.present.add(i)
            self.reported.add(i)
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_start and \
                t.datetime_complete else 0.0
            info = {"pruned": t.user_attrs.get("last_epoch")} if t.state == TrialState.PRUNED else {}
            if t.state == TrialState.FAIL:
                events.append(Ended(job, None, f"{job.describe()} failed: {t.user_attrs.get('error', 'no message')}",
                                    seconds))
            else:
                events.append(Ended(job, None, None, seconds, info))
        return events

    def submit(self, jobs: list[Job], schedule: Schedule) -> None:
        new = [j for j in jobs if job_id(j) not in self.present]
        if not new:
            return
        with enqueue_lock(self.storage):
            latest = self._latest()
            for job in new:
                i = job_id(job)
                t = latest.get(i)
                if t is not None and t.state != TrialState.FAIL:
                    continue
                params = dict(job.shown) if job.trial else {}
                self.studies[job.trial].enqueue_trial(
                    params, user_attrs={"id": i, "job": job_record(job),
                                        **({"space": self.spaces[job.trial]} if job.trial else {})})
                self.present.add(i)
                self.active = True
                schedule.running.add(job.key)

    def busy(self) -> bool:
        return self.active

    def next(self, live=None) -> list[Ended]:
        for group, study in self.studies.items():
            trial_id = study._pop_waiting_trial_id()  # WAITING -> RUNNING only for one worker
            if trial_id is not None:
                return [self._run(study, trial_id)]
        if not any(reclaim_stale(s) for s in self.studies.values()):
            time.sleep(POLL_S)
        return []

    def _run(self, study: optuna.Study, trial_id: int) -> Ended:
        trial = optuna.Trial(study, trial_id)
        frozen = study._storage.get_trial(trial_id)
        job = job_from(frozen.user_attrs["job"])
        self.reported.add(job_id(job))
        trial.set_user_attr("worker", self.worker.record())
        trial.set_user_attr("heartbeat", time.time())
        trial.set_user_attr("stage_dir", str(RunFolder(job.run_dir).stage_dir(job.stage)))
        start = time.perf_counter()
        callbacks = []
        if job.trial:
            for name, values in frozen.user_attrs.get("space", {}).items():  # Optuna's record of the space
                trial.suggest_categorical(name, values)
            callbacks = [PruneOnValidation(trial)] if self.config.prune else []
        try:
            with _Heartbeat(study._storage, trial_id):
                metrics = execute_job(job, via=self.via, progress=False, label=job.label or job.stage,
                                      **({"callbacks": callbacks} if job.trial else {}))
        except (Exception, KeyboardInterrupt) as exc:
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
                study.tell(trial, state=TrialState.FAIL)
            if isinstance(exc, KeyboardInterrupt):
                raise JobInterrupted(f"interrupted (Ctrl-C) during {job.describe()}", job) from None
            return Ended(job, None, str(exc) if isinstance(exc, JobError) else f"{job.describe()} failed: {exc}",
                         time.perf_counter() - start)
        trial.set_user_attr("last_epoch", (metrics or {}).get("epochs_run"))
        pruned = callbacks[0].pruned_at if callbacks else None
        if pruned is not None:
            trial.set_user_attr("last_epoch", pruned)
            study.tell(trial, state=TrialState.PRUNED)
            return Ended(job, metrics, None, time.perf_counter() - start, {"pruned": pruned})
        value = float((metrics or {}).get("best_val_auc", 0.0) or 0.0)
        study.tell(trial, value if math.isfinite(value) else 0.0)
        return Ended(job, metrics, None, time.perf_counter() - start)

    def close(self) -> None:
        for child in self.children:
            child.join()
        if self.restore is not None:
            torch.set_num_threads(self.restore)
        failed = [c.exitcode for c in self.children if c.exitcode]
        if failed:
            raise JobError(f"{len(failed)} worker process(es) failed (exit codes {failed}); the job's error is in "
                           f"its trial's 'error' attribute; rerun the same command to continue")
