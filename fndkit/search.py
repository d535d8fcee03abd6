"""Each method's hyper-parameters searched on validation, and a plan's queue, on Optuna.

    python -m fndkit search fnd npair --seeds 0 1 2 --workers 2          # a laptop: 2 workers
    python -m fndkit search all --workers-per-gpu 4                       # a GPU box: 4 per GPU
    python -m fndkit search all --storage postgresql://u:p@db:5432/fndkit --worker-only   # each node
    python -m fndkit paper all --seeds 0 1 2                              # search, then the paper

**Search** (paper §4.1.4: "we report the test performance with their optimal hyper-parameters
searched via the validation set"). Each method (N-pair, BPR, FND, FND-CL, each baseline) has a
space declared beside its objective or model (``Objective.search_space`` in
:mod:`fndkit.objectives` — FND: α, BPR: τ, N-pair: lr, FND-CL: λ and the augmentation pair — and
``search_space`` of each baseline, :func:`fndkit.baselines.catalogue`); :func:`space` reads them.
Every point of the (small, categorical) grid is one trial: a :class:`~fndkit.jobs.Job` that trains
the method on the training split in the *search seed*'s run folder (``search-<method>-<values>``)
and is scored by its best validation AUC on the student's validation half; the test candidates are
never scored for a trial (``evaluate_test=False``). The chosen point is the validation argmax
(first trial on ties); it is written to ``<folder>/chosen.json`` and then trains on every seed
under the method's usual stage name, which is what results.csv, report.html and the README report
on test. Fig. 4 and Fig. 5 stay full grids.

**Pruning.** A :class:`PruneOnValidation` callback reports each epoch's validation AUC to the trial;
Optuna's median pruner (after ``PRUNER_STARTUP`` finished trials, from epoch ``PRUNER_WARMUP`` + 1)
stops a trial that falls below the median of the others at the same epoch: the run stops through
``fit``'s ``should_stop`` (its folder keeps what it trained), the trial is recorded as PRUNED with
``last_epoch``.

**The queue is the study storage.** Every job of a plan — prerequisites, search trials, the chosen
points' runs, every table's and figure's job — is a trial of a study in one storage, and a worker
takes one by popping a WAITING trial (Optuna sets it RUNNING only if it still is WAITING, so one
worker gets it). Fixed jobs are enqueued as trials whose user attributes hold the job; search trials
carry their values as Optuna parameters (so its plots and importance work). Phases keep the order
of prerequisites: per phase (data, autoencoder, teacher, … by :data:`fndkit.jobs.RANK`; each
method's search; the chosen runs) a worker takes jobs until none waits, then waits until none runs.
Storage: by default a journal file, ``<root>/<machine>/optuna.journal`` (no service); several
machines share one database with ``--storage postgresql://…`` (SQLAlchemy + psycopg2). Every
worker runs the same command; ``--workers N`` starts N on this machine, ``--workers-per-gpu K`` K
per visible GPU (each sees one GPU), ``scripts/slurm_workers.sh`` N on a cluster.

**Faults.** A worker killed (SIGKILL, a lost node) leaves its trial RUNNING; the journal has no
heartbeat. Our rule is the stage folder's claim rule (:mod:`fndkit.rundir`) applied to the worker
that popped the trial, whose host, pid and pid start time the trial records, with a heartbeat this
worker refreshes in the trial every ``HEARTBEAT_S`` while it works: on the same host the trial is
stale when that pid is gone; on another host when its heartbeat is older than the claim lease
(``CLAIM_LEASE_S``) — unless the stage folder is claimed by a live process. Any worker waiting in
that phase (or the rerun) marks a stale trial FAIL (``stale`` says why) and enqueues the same job
again; the next worker takes the stage's abandoned claim over and resumes from its ``last.pt``, so
nothing trains twice and nothing is lost. Two workers never train one stage folder at once (the
claim). Workers enqueue one at a time (a flock beside the journal, an advisory lock on PostgreSQL),
so a job is enqueued once; were it enqueued twice (another database), it would still train once
(the second worker reuses the finished stage).

Bad input — an unknown method, a value outside a declared space, a malformed or unreachable storage
URL, a study that another plan created — is refused in one line naming it and the fix, before any
training (:class:`SearchError`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import socket
import sys
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
import torch
from optuna.trial import TrialState

from . import experiments as X
from .artifacts import atomic_path, read_json, write_json
from .jobs import RANK, STAGES, VIA, Job, JobError, execute_job, params_for
from .stages.training import PARAMS as TRAINING_PARAMS
from .models.registry import MODELS, model_class
from .objectives import BPR, FND, NPair, WithContrastive
from .rundir import CLAIM_LEASE_S, RunFolder, claim_holder, process_alive, process_start

JOURNAL = "optuna.journal"
CHOSEN = "chosen.json"
HEARTBEAT_S = 10.0                 # a worker refreshes its trial's heartbeat this often
POLL_S = 1.0                       # a worker waiting for others' jobs looks again this often
PRUNER_STARTUP = 2                 # finished trials before the median pruner prunes anything
PRUNER_WARMUP = 2                  # epochs a trial always trains: the first epochs' AUC is mostly noise
TRAINING = ("teacher", "student", "contrastive", "baseline")
PAPER_METHODS = ("npair", "bpr", "fnd", "fnd-cl")
optuna.logging.set_verbosity(optuna.logging.WARNING)


class SearchError(ValueError):
    """Bad input to a search (named, with the fix), found before any training."""


# ------------------------------------------------------------------------------------------------
# Spaces: declared beside each objective and model

def methods() -> list[str]:
    """Every searchable method: the paper's four and each baseline."""
    return [*PAPER_METHODS, *X.baselines()]


def declared_space(method: str) -> dict[str, list]:
    """The search space declared beside ``method``'s objective or model (TrainConfig field -> values)."""
    if method in ("npair", "bpr", "fnd"):
        return {k: list(v) for k, v in {"npair": NPair, "bpr": BPR, "fnd": FND}[method].search_space.items()}
    if method == "fnd-cl":
        return {k: list(v) for k, v in WithContrastive.search_space.items()}
    if method in MODELS and method != "recommender":
        return {k: list(v) for k, v in getattr(model_class(method), "search_space", {}).items()}
    raise SearchError(f"method {method!r} is unknown; choose one of {', '.join(methods())} (or all)")


def stage_kind(method: str) -> str:
    return "student" if method in ("npair", "bpr", "fnd") else "contrastive" if method == "fnd-cl" else "baseline"


def space(method: str) -> dict[str, list]:
    """What the search of ``method`` tries: its declared space, less the names its stage's
    ``Params`` (its notebook's cell) cannot set — today ``weight_decay`` of the triplet baselines
    (:func:`unsearchable` lists them), which a job could not pass to the stage."""
    fields = set(TRAINING_PARAMS[stage_kind(method)].field_names())
    return {k: v for k, v in declared_space(method).items() if k in fields}


def unsearchable(method: str) -> list[str]:
    """Names declared in ``method``'s space that its stage cannot take (left out of the search)."""
    return sorted(set(declared_space(method)) - set(space(method)))


def restrict(method: str, values: dict[str, list] | None) -> dict[str, list]:
    """``method``'s space, restricted to ``values`` (name -> a subset of the declared values);
    a name or value outside the declared space is refused."""
    full = space(method)
    if not full:
        raise SearchError(f"method {method!r} declares no search space: add search_space to its model "
                          f"class (see fndkit/baselines/common.py)")
    out = dict(full)
    for name, chosen in (values or {}).items():
        if name not in full:
            raise SearchError(f"{method}: {name!r} is not in its search space ({', '.join(full)}); "
                              f"drop it or pick one of those names")
        bad = [v for v in chosen if not any(_same(v, d) for d in full[name])]
        if bad:
            raise SearchError(f"{method}: {name}={bad[0]!r} is outside the declared space {full[name]}; pick "
                              f"values from it (or declare the value beside the objective / model)")
        out[name] = [d for d in full[name] if any(_same(v, d) for v in chosen)]
    return out


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a).replace(" ", "") == str(b).replace(" ", "")
    return math.isclose(float(a), float(b), rel_tol=1e-9)


def grid(sp: dict[str, list]) -> list[dict]:
    """Every point of a categorical space, in declaration order."""
    points = [{}]
    for name, values in sp.items():
        points = [{**p, name: v} for p in points for v in values]
    return points


def parse_values(items: Iterable[str]) -> dict[str, dict[str, list]]:
    """``--values fnd.alpha=1.25,2 bpr.tau=0.1`` -> {method: {name: [values]}}."""
    out: dict[str, dict[str, list]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not text:
            raise SearchError(f"--values {item!r} must look like METHOD.NAME=V1,V2 (e.g. fnd.alpha=1.25,2)")
        vals = []
        for v in text.split(";" if ";" in text else ","):
            try:
                vals.append(float(v))
            except ValueError:
                vals.append(v)
        if name == "augmentations":  # a pair is itself "a,b": pairs are separated by ';'
            vals = [v.strip() for v in text.split(";")]
        out.setdefault(method, {})[name] = vals
    return out


def trial_stage(method: str, point: dict) -> str:
    """The stage folder of a trial: ``search-<method>-<name><value>…`` (a pair's comma as ``+``)."""
    parts = [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in point.items()]
    return "-".join(["search", method, *parts]).replace(",", "+")


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
        raise SearchError(f"--storage {shown!r} is not a storage: use postgresql://USER:PASSWORD@HOST:PORT/DB, "
                          f"sqlite:///PATH.db, a PATH.journal file, or leave it out (a journal file under the "
                          f"plan's folder)")
    if parsed.scheme.startswith("postgresql") and (not parsed.hostname or not parsed.path.strip("/")):
        raise SearchError(f"--storage {shown!r} names no host or database: use "
                          f"postgresql://USER:PASSWORD@HOST:PORT/DB")
    kwargs = {"connect_args": {"connect_timeout": 5}} if parsed.scheme.startswith("postgresql") else {}
    if parsed.scheme == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3; the pinned driver is psycopg2
        url = "postgresql+psycopg2" + url[len("postgresql"):]
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # the driver's own error, first line: refused connection, bad password …
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SearchError(f"--storage {shown!r} is unreachable ({type(exc).__name__}: {first}); start the "
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


def plan_identity(sweep: X.Sweep) -> dict:
    """What makes two plans one: the folder their jobs fill and the data scale."""
    return {"folder": str(sweep.folder), "scale": sweep.scale}


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
        raise SearchError(f"study {name!r} in this storage was created by another plan ({diff}); pass "
                          f"--study-prefix NAME for a new set of studies, or run that plan's command")
    return study


# ------------------------------------------------------------------------------------------------
# Jobs as trials

def job_record(job: Job) -> dict:
    return {"kind": job.kind, "params": job.params.to_dict(), "label": job.label, "method": job.method,
            "shown": job.shown}


def job_from(record: dict) -> Job:
    return Job(params_for(record["kind"], **record["params"]), label=record["label"], method=record["method"],
               shown=record.get("shown", {}))


def job_id(job: Job) -> str:
    return hashlib.sha1(job.key.encode()).hexdigest()[:16]


ENQUEUE_LOCK_KEY = 22_0_22  # PostgreSQL advisory lock id of fndkit's enqueuers


@contextlib.contextmanager
def enqueue_lock(storage):
    """Workers enqueue one after the other: a flock beside a journal file, an advisory lock on
    PostgreSQL (another database may see a job enqueued twice by two machines starting at once:
    it trains once, see the module docstring)."""
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


def enqueue(study: optuna.Study, items: list[tuple[dict, Job]], **attrs) -> int:
    """Enqueue ``(params, job)`` items not already in ``study`` (waiting, running or finished; a
    failed one is enqueued again), with user attributes ``attrs``; returns how many were added."""
    with enqueue_lock(study._storage):
        present = {t.user_attrs.get("id") for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
        added = 0
        for params, job in items:
            if job_id(job) in present:
                continue
            study.enqueue_trial(params, user_attrs={"id": job_id(job), "job": job_record(job), **attrs})
            present.add(job_id(job))
            added += 1
    return added


@dataclass
class Worker:
    """One worker's identity on its trials, and what it ran."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    ran: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {"host": self.host, "pid": self.pid, "pid_start": process_start(self.pid)}


class _Heartbeat:
    """Refresh ``heartbeat`` in a trial every :data:`HEARTBEAT_S` while the worker runs it."""

    def __init__(self, study: optuna.Study, trial_id: int):
        self.study, self.trial_id, self.stop = study, trial_id, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"trial {trial_id} heartbeat")

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a finished trial, a storage hiccup: the next beat
                self.study._storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())

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
        kept = {k: v for k, v in trial.user_attrs.items() if k in ("id", "job", "search")}
        study.enqueue_trial(params, user_attrs={**kept, "resumed_from_trial": trial.number})
        print(f"{study.study_name}: trial {trial.number} ({trial.user_attrs['job']['label']}) was abandoned "
              f"({reason}); enqueued again, it resumes from its last.pt", flush=True)
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


def run_trial(study: optuna.Study, trial: optuna.Trial, job: Job, via: str) -> None:
    """Run one popped trial's job and tell the study how it ended."""
    search = "search" in trial.user_attrs
    if search:
        for name, values in trial.user_attrs["search"].items():  # Optuna's record of the space
            trial.suggest_categorical(name, values)
    if search:  # in this process: the pruning callback, and the test candidates never scored
        callback = PruneOnValidation(trial)
        metrics = STAGES[job.kind][1](job.params, progress=False, callbacks=[callback], evaluate_test=False,
                                      tensorboard=True)
        if callback.pruned_at is not None:
            trial.set_user_attr("last_epoch", callback.pruned_at)
            study.tell(trial, state=TrialState.PRUNED)
            return
    elif job.kind in TRAINING and via == "process":
        metrics = STAGES[job.kind][1](job.params, progress=False, tensorboard=True)
    else:
        metrics = execute_job(job, via=via, progress=False)
    value = float((metrics or {}).get("best_val_auc", 0.0) or 0.0)
    trial.set_user_attr("last_epoch", (metrics or {}).get("epochs_run"))
    study.tell(trial, value if math.isfinite(value) else 0.0)


def check_phase(study: optuna.Study) -> None:
    """A phase whose job failed (in any worker) stops every worker before the next phase, which
    stands on it: the error names the job; rerunning the command enqueues it again."""
    trials = study.get_trials(deepcopy=False)
    ok = {t.user_attrs.get("id") for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    failed = [t for t in trials if t.state == TrialState.FAIL and "stale" not in t.user_attrs
              and t.user_attrs.get("id") not in ok]
    if failed:
        t = failed[0]
        raise JobError(f"{study.study_name}: {t.user_attrs['job']['label']} failed "
                       f"({t.user_attrs.get('error', 'no message')}); fix it and rerun the same command")


def drain(study: optuna.Study, worker: Worker, via: str = "process") -> None:
    """Take and run ``study``'s waiting trials until none waits, then wait until none runs
    (reclaiming stale ones): a phase ends for this worker when it ends for every worker."""
    while True:
        trial_id = study._pop_waiting_trial_id()  # WAITING -> RUNNING only for one worker
        if trial_id is None:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                return check_phase(study)
            if reclaim_stale(study) == 0:
                time.sleep(POLL_S)
            continue
        trial = optuna.Trial(study, trial_id)
        frozen = study._storage.get_trial(trial_id)
        job = job_from(frozen.user_attrs["job"])
        trial.set_user_attr("worker", worker.record())
        trial.set_user_attr("heartbeat", time.time())
        trial.set_user_attr("stage_dir", str(RunFolder(job.run_dir).stage_dir(job.label or job.name())))
        worker.ran.append(job.label or job.name())
        try:
            with _Heartbeat(study, trial_id):
                run_trial(study, trial, job, via)
        except (Exception, KeyboardInterrupt) as exc:
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
                study.tell(trial, state=TrialState.FAIL)
            if isinstance(exc, JobError) or isinstance(exc, KeyboardInterrupt):
                raise
            raise JobError(f"{job.describe()} failed: {type(exc).__name__}: {exc}", job) from exc


# ------------------------------------------------------------------------------------------------
# The plan: phases on the storage

@dataclass
class SearchPlan:
    """What one command runs: the sweep, the methods searched (with their restricted spaces), the
    experiments run afterwards, the storage and how this machine's workers run."""

    sweep: X.Sweep
    spaces: dict[str, dict[str, list]]
    names: list[str]
    storage: str | None = None
    prefix: str = "fndkit"
    search_seed: int = 0
    prune: bool = True
    via: str = "process"
    # stage kind -> parameters set on every job of that kind (e.g. {"student": {"max_steps_per_epoch": 2}}
    # for a smoke run); part of the jobs, so two plans that differ here never share a stage folder
    overrides: dict = field(default_factory=dict)

    def adjust(self, job: Job) -> Job:
        extra = self.overrides.get(job.kind)
        return Job(job.params.replace(**extra), label=job.label, method=job.method, shown=job.shown) if extra else job

    @property
    def identity(self) -> dict:
        return plan_identity(self.sweep)

    def study_name(self, phase: str) -> str:
        return f"{self.prefix}:{phase}"

    def search_sweep(self) -> X.Sweep:
        return replace(self.sweep, seeds=(self.search_seed,), chosen={}, searched={}, methods=())

    def trials(self, method: str) -> list[tuple[dict, Job]]:
        sweep = self.search_sweep()
        out = []
        for point in grid(self.spaces[method]):
            job = X.method_run(method, sweep, self.search_seed, **point)
            out.append((point, self.adjust(X.renamed(job, trial_stage(method, point)))))
        return out

    def check(self) -> optuna.storages.BaseStorage:
        """Everything that can be refused before training: the storage, every study's owner."""
        storage = open_storage(self.storage, self.sweep.folder)
        for phase in self.phases():
            open_study(storage, self.study_name(phase), self.identity)
        return storage

    def phases(self) -> list[str]:
        return [f"jobs-r{r}" for r in sorted(set(RANK.values()))] + [f"search-{m}" for m in self.spaces]


def run_jobs(storage, plan: SearchPlan, jobs: list[Job], worker: Worker) -> None:
    """``jobs`` through the storage, rank by rank (one study per rank: ``jobs-r<rank>``; a job
    already there, e.g. a prerequisite of the search, is not enqueued again)."""
    jobs = [plan.adjust(j) for j in jobs]
    for rank in sorted(set(RANK.values())):
        batch = [j for j in jobs if RANK[j.kind] == rank]
        study = open_study(storage, plan.study_name(f"jobs-r{rank}"), plan.identity)
        if batch:
            enqueue(study, [({}, j) for j in batch])
        drain(study, worker, via=plan.via)


def search_phase(storage, plan: SearchPlan, worker: Worker) -> None:
    """Every method's trials, then (once all have ended) the chosen points into the sweep."""
    seeds = tuple(dict.fromkeys((plan.search_seed, *plan.sweep.seeds)))
    prereq = [j for s in seeds for j in X.prerequisites(plan.sweep, s)]
    run_jobs(storage, plan, prereq, worker)
    for method, sp in plan.spaces.items():
        study = open_study(storage, plan.study_name(f"search-{method}"), plan.identity, prune=plan.prune)
        enqueue(study, plan.trials(method), search=sp)
        drain(study, worker)
    chosen(storage, plan)


def chosen(storage, plan: SearchPlan) -> dict:
    """The validation argmax of each method's search (first trial on ties), put into the sweep and
    written to ``chosen.json``."""
    record = {}
    for method in plan.spaces:
        study = open_study(storage, plan.study_name(f"search-{method}"), plan.identity, prune=True)
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if not done:
            raise SearchError(f"the search for {method} finished no trial ({len(trials)} trial(s): "
                              f"{sorted({t.state.name for t in trials})}); see its trials' 'error' attribute")
        best = max(done, key=lambda t: (t.value, -t.number))
        values = {k: best.params[k] for k in plan.spaces[method]}
        record[method] = {"values": values, "val_auc": best.value, "stage": best.user_attrs["job"]["label"],
                          "seed": plan.search_seed, "trials": len({t.user_attrs.get("id") for t in trials}),
                          "pruned": sum(t.state == TrialState.PRUNED for t in trials)}
        write_plots(study, plan.sweep.folder / "search", method)
    path = plan.sweep.folder / CHOSEN
    merged = {**(read_json(path) if path.exists() else {}), **record}
    write_json(path, merged)
    apply_chosen(plan.sweep, merged)
    if plan.search_seed in plan.sweep.seeds:
        for method in plan.spaces:
            adopt(plan, method, merged[method]["stage"])
    return merged


ADOPTED = ("checkpoint.pt", "last.pt", "history.json")


def adopt(plan: SearchPlan, method: str, trial_stage_name: str) -> bool:
    """Hand the chosen trial's training to the method's stage at the search seed, so the chosen
    point is not trained twice: its weights, ``last.pt`` and history go into the (not yet existing)
    stage folder without ``metrics.json``, so the stage's job resumes it — with nothing left to
    train, it only scores the test set, after the choice. Only when the two training configs are
    equal (else the stage trains as usual). Returns whether it adopted."""
    job = plan.adjust(X.method_run(method, plan.sweep, plan.search_seed))
    folder = RunFolder(job.run_dir)
    source, target = folder.stage_dir(trial_stage_name), folder.stage_dir(job.label)
    if target.exists() or not all((source / f).exists() for f in (*ADOPTED, "config.json")):
        return False
    if read_json(source / "config.json").get("train") != json.loads(json.dumps(job.params.plan().cfg.to_dict())):
        return False
    tmp = target.with_name(f".{target.name}.adopting-{os.getpid()}")
    tmp.mkdir(parents=True)
    for name in ADOPTED:
        shutil.copyfile(source / name, tmp / name)
    for events in source.glob("events.out.tfevents.*"):
        shutil.copyfile(events, tmp / events.name)
    try:
        os.rename(tmp, target)  # another worker adopted first: keep theirs
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def apply_chosen(sweep: X.Sweep, record: dict) -> None:
    sweep.chosen = {m: dict(r["values"]) for m, r in record.items()}
    sweep.searched = {m: {k: v for k, v in r.items() if k != "values"} for m, r in record.items()}


def write_plots(study: optuna.Study, folder: Path, method: str) -> None:
    """Optuna's optimisation history and parameter importance (HTML fragments for the report)."""
    folder.mkdir(parents=True, exist_ok=True)
    from optuna import visualization as vis

    for name, make in (("history", vis.plot_optimization_history), ("importance", vis.plot_param_importances)):
        try:
            with warnings.catch_warnings():  # "too few trials": the plot still shows what there is
                warnings.simplefilter("ignore")
                fig = make(study)
        except Exception:  # no finished trial, one value per parameter: no plot, no harm
            continue
        fig.update_layout(title=f"{method}: {name}")
        with atomic_path(folder / f"{method}-{name}.html") as tmp:
            tmp.write_text(fig.to_html(full_html=False, include_plotlyjs=False))


def work(plan: SearchPlan, report: bool = True, search: bool = True) -> Worker:
    """One worker's whole command: the search phase, then the experiments' jobs through the
    storage; ``report``: also collect the results and write results.csv / report.html."""
    worker = Worker()
    storage = open_storage(plan.storage, plan.sweep.folder)
    if search and plan.spaces:  # (paper --no-search: no spaces, every method at the paper's values)
        search_phase(storage, plan, worker)
    execute = lambda jobs: run_jobs(storage, plan, jobs, worker)  # noqa: E731
    if report:
        X.run_sweep(plan.names, plan.sweep, progress=False, execute=execute)
    else:
        execute(X.plan(plan.names, plan.sweep))
    return worker


def worker_context():
    """Worker processes forked from a server that imported this module once (no CUDA in it, so
    the children may use the GPU), instead of each importing torch, Optuna and plotly afresh."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["fndkit.search"])
    return context


def _child(plan: SearchPlan, threads: int, gpu: str | None) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    torch.set_num_threads(threads)
    work(plan, report=False)


def launch(plan: SearchPlan, workers: int = 1, workers_per_gpu: int | None = None, report: bool = True) -> float:
    """Check the plan, then run ``workers`` workers here (this process and ``workers - 1`` spawned
    ones; with ``workers_per_gpu`` K, K per visible GPU, each seeing one); returns wall seconds."""
    plan.check()
    gpus: list[str | None] = [None]
    if workers_per_gpu:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        gpus = ids or [None]
        workers = len(gpus) * workers_per_gpu
    threads = max(1, (os.cpu_count() or 1) // workers)
    start = time.perf_counter()
    context = worker_context()
    children = [context.Process(target=_child, args=(plan, threads, gpus[(i + 1) % len(gpus)]), daemon=False)
                for i in range(workers - 1)]
    for child in children:
        child.start()
    try:
        if gpus[0] is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
        torch.set_num_threads(threads)
        work(plan, report=False)
    finally:
        for child in children:
            child.join()
    failed = [c.exitcode for c in children if c.exitcode]
    if failed:
        raise JobError(f"{len(failed)} worker process(es) failed (exit codes {failed}); the job's error is "
                       f"above and in its trial's 'error' attribute; rerun the same command to continue")
    if report:
        work(plan, report=True)  # every job is finished: this only collects and writes the report
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------
# Command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--root", default="outputs/paper")
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--quick", action="store_true", help="tiny data, one seed, tiny epochs (tests)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--via", choices=VIA, default="process", help="how fixed jobs run (trials: in-process)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument("--workers-per-gpu", type=int, default=None, help="K workers per visible GPU")
    parser.add_argument("--storage", default=None, help="postgresql://… shared by several machines (default: "
                        "a journal file under the plan's folder)")
    parser.add_argument("--study-prefix", default="fndkit", help="names this plan's studies in the storage")
    parser.add_argument("--search-seed", type=int, default=0, help="the seed whose run folder the trials use")
    parser.add_argument("--values", nargs="*", default=[], help="restrict a space: METHOD.NAME=V1,V2 "
                        "(augmentation pairs separated by ';')")
    parser.add_argument("--no-prune", action="store_true", help="run every trial to its end")
    parser.add_argument("--worker-only", action="store_true", help="run jobs, write no report (extra machines)")
    parser.add_argument("--readme", default=None, help="also write the results block into this file")


def build_plan(args, methods_: list[str], names: list[str]) -> SearchPlan:
    if args.workers < 1 or (args.workers_per_gpu is not None and args.workers_per_gpu < 1):
        raise SearchError(f"--workers {args.workers} / --workers-per-gpu {args.workers_per_gpu} must be >= 1")
    sweep = X.Sweep(Path(args.root), seeds=tuple(args.seeds[:1] if args.quick else args.seeds), scale=args.scale,
                    quick=args.quick, device=args.device, via=args.via)
    values = parse_values(args.values)
    unknown = sorted(set(values) - set(methods_))
    if unknown:
        raise SearchError(f"--values names {unknown[0]!r}, which is not searched here ({', '.join(methods_)})")
    spaces = {m: restrict(m, values.get(m)) for m in methods_}
    return SearchPlan(sweep, spaces, names, storage=args.storage, prefix=args.study_prefix,
                      search_seed=args.search_seed, prune=not args.no_prune, via=args.via)


def _run(plan: SearchPlan, args) -> int:
    seconds = launch(plan, workers=args.workers, workers_per_gpu=args.workers_per_gpu, report=not args.worker_only)
    if args.readme and not args.worker_only:
        X.update_readme(args.readme, (plan.sweep.folder / "results.md").read_text())
    for method, record in plan.sweep.searched.items():
        print(f"{method}: chose {plan.sweep.chosen[method]} (validation AUC {record['val_auc']:.4f}, "
              f"{record['trials']} trials, {record['pruned']} pruned)")
    print(f"{seconds:.0f} s; results: {plan.sweep.folder / 'results.csv'}; report: {plan.sweep.folder / 'report.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m fndkit search METHOD… | all``: search, then train the chosen points over seeds."""
    parser = argparse.ArgumentParser(prog="python -m fndkit search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("methods", nargs="+", help=f"{', '.join(methods())} or all")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        chosen_methods = methods() if args.methods == ["all"] else list(dict.fromkeys(args.methods))
        for m in chosen_methods:
            space(m)  # an unknown method, named
        plan = build_plan(args, chosen_methods, ["table2"])
        plan.sweep.methods = tuple(chosen_methods)
        return _run(plan, args)
    except (SearchError, X.ExperimentError, JobError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0] if isinstance(exc, SearchError) else exc}", file=sys.stderr)
        return 1


def paper_main(argv: list[str] | None = None) -> int:
    """``python -m fndkit paper NAMES…``: every method's search (``--no-search``: the paper's
    values), then the experiments' jobs, all through the storage."""
    parser = argparse.ArgumentParser(prog="python -m fndkit paper", description=X.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help=f"experiments: {', '.join(X.EXPERIMENTS)} or all")
    parser.add_argument("--no-search", action="store_true", help="skip the search (the paper's values)")
    add_arguments(parser)
    parser.set_defaults(via="notebook")
    args = parser.parse_args(argv)
    try:
        names = list(X.EXPERIMENTS) + list(X.fnlab.EXPERIMENTS) if args.names == ["all"] else args.names
        unknown = sorted(set(names) - set(X.EXPERIMENTS) - set(X.fnlab.EXPERIMENTS))
        if unknown:
            raise SearchError(f"unknown experiment(s) {unknown}; choose from {sorted(X.EXPERIMENTS)} or all")
        probe = X.Sweep(Path(args.root), quick=args.quick, scale=args.scale, device=args.device)
        searched = [] if args.no_search else X.table2_methods(probe)
        return _run(build_plan(args, searched, names), args)
    except (SearchError, X.ExperimentError, JobError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0] if isinstance(exc, SearchError) else exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
