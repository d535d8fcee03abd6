"""Where a training run's epochs go, and what other stopping rules would have saved (issue 30).

    python scripts/convergence_cost.py demo/teacher/0=outputs/demo/teacher \
        rich/XS-npair/1=ROOT/seed0/XS_npair-seed1 ... [--record ROOT/plan.json] [--out table.md]

Each ``LABEL=STAGE_FOLDER`` is one finished training stage (its ``history.json`` and ``config.json``);
the label reads ``preset/model/seed``. For every run the table gives what it did (epochs run, best
epoch, best validation AUC, the steps' seconds) and, for each rule of ``RULES``, the epochs that rule
would have run and the change of the best validation AUC, replayed exactly from the history
(:func:`fndkit.train.replay_stopping`: the plateau schedule never reads the budget, so a run that
stops earlier has the same trajectory until it stops). ``--record`` (a plan's ``plan.json``) adds
the jobs' wall time, so the steps' share of it shows what validation, scoring and start-up cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fndkit.config import SCALE_PRESETS  # noqa: E402
from fndkit.train import replay_stopping  # noqa: E402

CHAIN = SCALE_PRESETS["demo"]["chain_epochs"]

# name -> (replay arguments as a function of the run's own lr and patience, what it means)
RULES = {
    "patience 4": (lambda lr, p: {"patience": min(p, 4)}, "4 epochs without a better validation AUC"),
    "patience 2": (lambda lr, p: {"patience": min(p, 2)}, "2 epochs without a better validation AUC"),
    "gain > 0.002": (lambda lr, p: {"patience": p, "min_delta": 0.002},
                     "the run's patience, counting only gains over 0.002 AUC"),
    "lr_floor 1/16": (lambda lr, p: {"patience": p, "lr_floor": 1 / 16, "lr": lr},
                      "the run's patience, and stop at the first epoch without a gain once the plateau "
                      "schedule has halved lr 4 times (TrainConfig.lr_floor)"),
    f"{CHAIN} epochs": (lambda lr, p: {"patience": p, "epochs": CHAIN}, f"a budget of {CHAIN} epochs (the demo chain's)"),
}


def load(label: str, folder: Path) -> dict:
    history = json.loads((folder / "history.json").read_text())
    train = json.loads((folder / "config.json").read_text())["train"]
    preset, model, seed = (label.split("/") + ["", "", ""])[:3]
    return {"label": label, "preset": preset, "model": model, "seed": seed, "folder": folder, "history": history,
            "lr": float(train["lr"]), "patience": int(train["patience"]), "budget": int(train["epochs"])}


def wall_seconds(records: list[Path]) -> dict[str, float]:
    """Stage folder -> the job's wall seconds, from plan records."""
    out = {}
    for record in records:
        for job in json.loads(record.read_text()).get("jobs", []):
            if job.get("status") == "done" and job.get("label"):
                out[str(Path(job["run_dir"]) / job["label"])] = float(job.get("seconds") or 0)
    return out


def table(runs: list[dict], walls: dict[str, float]) -> str:
    head = ["run", "budget / patience", "epochs", "best epoch", "best val AUC", "steps s", "steps share"]
    head += [f"{name}: epochs, Δ val (pts)" for name in RULES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary = {name: {"saved": 0, "delta": []} for name in RULES}
    total = 0
    for run in runs:
        h = run["history"]
        before = replay_stopping(h, patience=10 ** 6)
        wall = walls.get(str(run["folder"]))
        share = f"{before['train_seconds'] / wall:.0%}" if wall else "—"
        row = [run["label"], f"{run['budget']} / {run['patience']}", str(before["stop_epoch"]), str(before["best_epoch"]),
               f"{before['best_val_auc']:.4f}", f"{before['train_seconds']:.0f}", share]
        total += before["stop_epoch"]
        for name, (rule, _) in RULES.items():
            after = replay_stopping(h, **rule(run["lr"], run["patience"]))
            delta = 100 * (after["best_val_auc"] - before["best_val_auc"])
            summary[name]["saved"] += before["stop_epoch"] - after["stop_epoch"]
            summary[name]["delta"].append(delta)
            row.append(f"{after['stop_epoch']}, {delta:+.2f}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| rule | what it is | epochs saved | mean Δ best val AUC (pts) | worst Δ (pts) |", "|---|---|---:|---:|---:|"]
    for name, (_, what) in RULES.items():
        s = summary[name]
        lines.append(f"| {name} | {what} | {s['saved']} of {total} ({s['saved'] / max(total, 1):.0%}) | "
                     f"{statistics.mean(s['delta']):+.3f} | {min(s['delta']):+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=STAGE_FOLDER (label: preset/model/seed)")
    parser.add_argument("--record", action="append", default=[], help="a plan.json with the jobs' wall time")
    parser.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    runs = []
    for spec in args.runs:
        label, sep, folder = spec.partition("=")
        if not sep or not (Path(folder) / "history.json").exists():
            parser.error(f"{spec!r}: expected LABEL=STAGE_FOLDER with a history.json in the folder")
        runs.append(load(label, Path(folder).resolve()))
    text = table(runs, wall_seconds([Path(r) for r in args.record]))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
