"""Live progress of the notebook chain on the console: what ``make demo`` shows while it runs.

While papermill executes a notebook, a background thread looks at the run folder once a second
(:meth:`~fndkit.rundir.RunFolder.training_progress`: the training stage whose ``config.json`` or
``history.json`` changed since the notebook started) and shows one status line::

    [3/9] 02_teacher 1m05s | teacher epoch 7/30, loss 2.41, val AUC 0.884 (best 0.884), 6.3 s/epoch | ≤ 2m40s here, ~6m left

On a terminal the line is rewritten in place; in a log (CI, ``make demo | tee log``) one line is
printed per finished epoch, and otherwise one every ``heartbeat`` seconds. Each notebook ends with
a ✓ line (its seconds, and for a training notebook its epochs and seconds per epoch), and
:func:`summary_table` gives the seconds per notebook of the whole chain.

The time left in a training notebook is an upper bound: the epochs left in its budget times its
seconds per epoch (early stopping may end it sooner). The time left in the chain adds the
reference durations of the notebooks still to come (:data:`REFERENCE_SECONDS`, measured on a
2-core CPU at demo scale), scaled by how fast this machine ran the notebooks already finished;
a notebook without a reference adds a ``+``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from typing import Iterator, TextIO

from .rundir import RunFolder

# Seconds per notebook of one `python -m fndkit chain --scale demo` run (2-core CPU shared with
# other jobs, 16 min in all; see the README). Only their proportions matter: the chain's estimate
# scales them by how fast this machine ran the notebooks already finished.
REFERENCE_SECONDS: dict[str, dict[str, float]] = {
    "demo": {"00_data": 13, "01_autoencoder": 28, "02_teacher": 274, "03_student_fnd": 192,
             "03_student_npair": 166, "04_contrastive": 236, "06_explorer": 16, "08_false_negatives": 22,
             "05_cold_start": 25},
}


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class TrainingStatus:
    """Where a training stage stands, from what ``fit()`` wrote into its folder."""

    stage: str
    epoch: int                  # epochs finished
    epochs: int | None          # the budget
    loss: float | None = None
    val_auc: float | None = None
    best_val_auc: float | None = None
    best_epoch: int | None = None
    epoch_seconds: float | None = None
    finished: bool = False

    @classmethod
    def from_progress(cls, progress: dict | None) -> "TrainingStatus | None":
        """From :meth:`RunFolder.training_progress` (None stays None)."""
        if not progress:
            return None
        history = [h for h in progress.get("history") or [] if isinstance(h, dict)]
        status = cls(stage=progress["stage"], epoch=len(history), epochs=progress.get("epochs"),
                     finished=bool(progress.get("finished")))
        if history:
            last = history[-1]
            status.epoch = int(last.get("epoch", len(history)))
            status.loss = last.get("loss")
            status.val_auc = last.get("val_auc")
            scored = [h for h in history if isinstance(h.get("val_auc"), (int, float))]
            if scored:
                best = max(scored, key=lambda h: h["val_auc"])
                status.best_val_auc, status.best_epoch = best["val_auc"], best.get("epoch")
            seconds = [h["seconds"] for h in history if isinstance(h.get("seconds"), (int, float))]
            status.epoch_seconds = sum(seconds) / len(seconds) if seconds else None
        return status

    def seconds_left(self) -> float | None:
        """Upper bound on the training time left: epochs left in the budget × seconds per epoch."""
        if self.finished:
            return 0.0
        if not self.epochs or self.epoch_seconds is None:
            return None
        return max(self.epochs - self.epoch, 0) * self.epoch_seconds

    def describe(self) -> str:
        if self.finished:
            return f"{self.stage} trained ({self.epoch} epochs), evaluating"
        if self.epoch == 0:
            return f"{self.stage} epoch 1/{self.epochs or '?'} running"
        parts = [f"{self.stage} epoch {self.epoch}/{self.epochs or '?'}"]
        if isinstance(self.loss, (int, float)):
            parts.append(f"loss {self.loss:.3f}")
        if isinstance(self.val_auc, (int, float)):
            parts.append(f"val AUC {self.val_auc:.3f} (best {self.best_val_auc:.3f})")
        if self.epoch_seconds is not None:
            parts.append(f"{self.epoch_seconds:.1f} s/epoch")
        return ", ".join(parts)

    def summary(self) -> dict:
        """What the pipeline record keeps of a training notebook."""
        return {"stage": self.stage, "epochs_run": self.epoch, "epochs": self.epochs,
                "epoch_seconds": None if self.epoch_seconds is None else round(self.epoch_seconds, 2),
                "best_epoch": self.best_epoch, "best_val_auc": self.best_val_auc}


class ChainProgress:
    """The console display of one chain run (see the module docstring).

    run: the chain's :class:`RunFolder`; labels: the step labels in order; scale: picks the
    :data:`REFERENCE_SECONDS` profile (None: no chain estimate); enabled: False keeps the console
    quiet (the training summaries are still collected).
    """

    def __init__(self, run: RunFolder, labels: list[str], scale: str | None = None,
                 stream: TextIO | None = None, enabled: bool = True, interval: float = 1.0,
                 heartbeat: float = 30.0):
        self.run, self.labels = run, list(labels)
        self.reference = REFERENCE_SECONDS.get(scale or "", {})
        self.stream = stream if stream is not None else sys.stderr
        self.enabled, self.interval, self.heartbeat = enabled, interval, heartbeat
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.finished: dict[str, float] = {}

    # ---------------------------------------------------------------- estimates
    def speed(self) -> float:
        """This machine's seconds per reference second, from the finished notebooks (1 if none)."""
        known = [(s, self.reference[label]) for label, s in self.finished.items() if label in self.reference]
        if not known:
            return 1.0
        return min(max(sum(s for s, _ in known) / sum(r for _, r in known), 0.2), 5.0)

    def chain_left(self, label: str, elapsed: float, here: float | None) -> tuple[float | None, bool]:
        """(estimated seconds left in the chain, whether a notebook without a reference remains)."""
        if not self.reference:
            return None, False
        speed = self.speed()
        unknown = False
        if here is None:
            ref = self.reference.get(label)
            if ref is None:
                unknown, here = True, 0.0
            else:
                here = max(ref * speed - elapsed, 0.0)
        later = self.labels[self.labels.index(label) + 1:] if label in self.labels else []
        unknown = unknown or any(lab not in self.reference for lab in later)
        return here + sum(self.reference.get(lab, 0.0) for lab in later) * speed, unknown

    def status_line(self, label: str, elapsed: float, training: TrainingStatus | None) -> str:
        index = self.labels.index(label) + 1 if label in self.labels else 0
        parts = [f"[{index}/{len(self.labels)}] {label} {format_duration(elapsed)}"]
        here = None
        if training is not None:
            parts.append(training.describe())
            here = training.seconds_left()
        left, unknown = self.chain_left(label, elapsed, here)
        estimate = []
        if here is not None and here >= 1:
            estimate.append(f"≤ {format_duration(here)} here")
        if left is not None:
            estimate.append(f"~{format_duration(left)}{'+' if unknown else ''} left")
        if estimate:
            parts.append(", ".join(estimate))
        return " | ".join(parts)

    # ---------------------------------------------------------------- display
    def _write(self, text: str, final: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.stream.write("\r" + text[:width] + "\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    @contextlib.contextmanager
    def notebook(self, label: str) -> Iterator[dict]:
        """Show the live line while the body (one notebook's execution) runs.

        Yields a dict that holds, afterwards, ``seconds`` and, for a training notebook,
        ``training`` (:meth:`TrainingStatus.summary`).
        """
        info: dict = {}
        since, start = time.time(), time.perf_counter()
        stop = threading.Event()

        def watch():
            last_epoch, last_print = None, 0.0
            while not stop.wait(self.interval):
                try:
                    training = TrainingStatus.from_progress(self.run.training_progress(since))
                except Exception:  # a display must never stop the chain
                    continue
                elapsed = time.perf_counter() - start
                epoch = (training.stage, training.epoch) if training else None
                if self.tty or epoch != last_epoch or elapsed - last_print >= self.heartbeat:
                    self._write(self.status_line(label, elapsed, training))
                    last_epoch, last_print = epoch, elapsed

        thread = threading.Thread(target=watch, name=f"progress {label}", daemon=True)
        if self.enabled:
            thread.start()
        ok = False
        try:
            yield info
            ok = True
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()
            info["seconds"] = time.perf_counter() - start
            try:
                training = TrainingStatus.from_progress(self.run.training_progress(since))
            except Exception:  # never hide the notebook's own outcome behind a display error
                training = None
            if training is not None and training.epoch > 0:
                info["training"] = training.summary()
            if ok:
                self.finished[label] = info["seconds"]
            mark = "✓" if ok else "✗"
            detail = ""
            if "training" in info:
                t = info["training"]
                detail = (f" ({t['stage']}: {t['epochs_run']} epochs"
                          + (f", {t['epoch_seconds']:.1f} s/epoch" if t["epoch_seconds"] is not None else "")
                          + (f", best val AUC {t['best_val_auc']:.3f} at epoch {t['best_epoch']}"
                             if t["best_val_auc"] is not None else "") + ")")
            self._write(f"{mark} {label} {info['seconds']:.0f} s{detail}", final=True)


def summary_table(steps: list[dict]) -> str:
    """Seconds per notebook of a chain record's ``steps`` (label, seconds, optional training) as a
    markdown table with each notebook's share and, for training notebooks, epochs × s/epoch."""
    total = sum(s["seconds"] for s in steps)
    lines = ["| notebook | seconds | share | training |", "|---|---:|---:|---|"]
    for s in steps:
        t = s.get("training")
        train = ""
        if t:
            train = f"{t['stage']}: {t['epochs_run']} epochs"
            if t.get("epoch_seconds") is not None:
                train += f" × {t['epoch_seconds']:.1f} s"
        share = 100 * s["seconds"] / total if total else 0.0
        lines.append(f"| {s['label']} | {s['seconds']:.0f} | {share:.0f}% | {train} |")
    lines.append(f"| **total** | **{total:.0f}** | 100% | {format_duration(total)} |")
    return "\n".join(lines)
