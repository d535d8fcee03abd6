"""One command line: ``python -m fndkit <verb> ...``.

    python -m fndkit chain   --run-dir outputs/demo --scale demo      the notebook chain (make demo)
    python -m fndkit paper   table2 fig4 --seeds 0 1 2                 search on validation, then the paper's plans
    python -m fndkit paper   --verdict                                 the claims' core over 10 seeds
    python -m fndkit search  fnd npair --seeds 0                       search only, then the chosen points
    python -m fndkit lab     fn_rate fn_ablation --seeds 0             the false-negative lab
    python -m fndkit distill --seeds 0 1 2                             the distillation benchmark (searched)
    python -m fndkit train   --run-dir R --stage student -p alpha=2    one training stage (torchrun too)
    python -m fndkit params  --stage student                           a stage's parameters
    python -m fndkit timed-chain --run-dir R --scale polyvore630 --report r.json
    python -m fndkit bench   --scale demo                              scoring and step profiles
    python -m fndkit pretrain --run-dir R                              the teacher's attribute pre-training

Every plan verb reads as four steps — build the jobs, ``run_plan`` them (on this machine, or
through an Optuna study storage with ``--storage``), ``collect`` the outcome into one table,
write the report from it. Shared options mean the same in every verb. A wrong input exits 2 with one
line; a failed job exits 1; ``--help`` imports nothing heavy.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from pathlib import Path

VERBS = ("chain", "paper", "search", "lab", "distill", "train", "params", "timed-chain", "bench", "pretrain")
# The tool verbs' vocabularies, spelled here so that --help imports nothing heavy; tests/test_cli.py
# holds them equal to the library's (fndkit.stages.training.PARAMS, fndkit.bench.profile).
TRAINING_STAGES = ("teacher", "student", "contrastive", "baseline")
BENCH_JPEG_SCALE = "polyvore630-jpeg"
BENCH_CPU_USERS = 20


class UserError(ValueError):
    """A command-line input that cannot work; printed as one line, exit code 2."""


def _bounded(cast, low: float, what: str, strict: bool = False):
    """An argparse type: ``cast(text)`` at least ``low`` (above it when ``strict``), finite."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (strict and value == low) or value == float("inf"):
            bound = f"> {low:g}" if strict else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"{text} must be {'a finite number ' if cast is float else ''}{bound}")
        return value
    return parse


_positive_int = _bounded(int, 1, "an integer")
_seed = _bounded(int, 0, "an integer seed")
_seconds = _bounded(float, 0, "a number of seconds", strict=True)
_count = _bounded(int, 0, "an integer")  # 0 has a meaning of its own, said in the option's help


def _users(text: str):
    """``--users``: a number of users, ``all`` (None) or ``default``."""
    if text in ("all", "default"):
        return None if text == "all" else text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of users >= 1, 'all' or 'default'") from None


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """A malformed option is one line (the verb and the error) and exit code 2, like every other
    wrong input; ``--help`` shows the usage."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser, root: str, seeds: list[int], workers: int = 1) -> None:
    g = p.add_argument_group("shared options")
    g.add_argument("--root", default=root, help="the plan's folder (a record plan.json and the reports go there)")
    g.add_argument("--seeds", nargs="+", type=_seed, default=seeds, help="training seeds (the replicates)")
    g.add_argument("--scale", default="demo", help="the synthetic benchmark's scale: tiny, demo")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    g.add_argument("--workers", type=_positive_int, default=workers, help="worker processes on this machine")
    g.add_argument("--threads", type=_positive_int, default=1,
                   help="torch threads per job: fixed, so that results (and the search's choices) do not depend "
                        "on --workers; on 2 cores use --workers 2")
    g.add_argument("--storage", default=None, help="run the jobs through an Optuna study storage: 'journal' (a file "
                   "under --root), a PATH.journal, postgresql://USER:PASS@HOST:PORT/DB (several machines: each "
                   "runs the same command) or sqlite:///PATH.db; default: on this machine only")
    g.add_argument("--study-prefix", default="fndkit", help="names this plan's studies in the storage")
    g.add_argument("--time-limit", type=_seconds, default=None, help="seconds after which no job starts")
    g.add_argument("--epochs", type=_positive_int, default=None, help="cap every training (smoke runs)")
    g.add_argument("--readme", default=None, help="also write the results block into this file (README.md)")
    g.add_argument("--worker-only", action="store_true", help="run jobs, write no report (the other machines "
                   "of a --storage plan)")
    g.add_argument("--collect-only", action="store_true", help="run nothing: the tables and report from the "
                   "finished stages")
    g.add_argument("--no-progress", action="store_true", help="one line per finished job instead of a live display")


def _searching(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search on validation")
    g.add_argument("--search-seed", type=_seed, default=None, help="whose run folder the trials use (default: the "
                   "first seed)")
    g.add_argument("--values", nargs="*", default=[], help="restrict a space: METHOD.NAME=V1,V2 (augmentation "
                   "pairs separated by ';')")
    g.add_argument("--no-prune", action="store_true", help="run every trial to its end (pruning needs --storage)")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="python -m fndkit", description=__doc__, formatter_class=_Formatter)
    sub = top.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    _chain_parser(sub)
    _plan_parsers(sub)
    _tool_verbs(sub)
    return top


def _chain_parser(sub) -> None:
    ch = sub.add_parser("chain", help="the notebook chain into one run folder (make demo)", formatter_class=_Formatter,
                        description="Run the notebook chain (00_data … 05_cold_start) into one run folder; executed "
                                    "copies in RUN_DIR/notebooks, report.md at the end. A finished run folder is "
                                    "refused unless --force; an interrupted one continues.")
    ch.add_argument("--run-dir", default="outputs/demo")
    ch.add_argument("--scale", default="demo")
    ch.add_argument("--seed", type=_seed, default=0, help="passed to every notebook")
    ch.add_argument("--force", action="store_true", help="delete a finished run folder first")
    ch.add_argument("--only", default="", help="comma-separated step labels to run")
    ch.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    ch.add_argument("--via", choices=("notebook", "process"), default="notebook",
                    help="notebook: executed copies; process: no kernels")
    ch.add_argument("--workers", type=_positive_int, default=1,
                    help="jobs at once (2: the students side by side once their prerequisites are done)")
    ch.add_argument("--threads", type=_positive_int, default=None, help="torch threads per job")


def _plan_parsers(sub) -> None:
    """The plan verbs: paper, search, lab, distill (their shared options: :func:`_common`)."""
    pa = sub.add_parser("paper", help="search on validation, then the paper's tables and figures over seeds",
                        formatter_class=_Formatter,
                        description="Each method's hyper-parameters searched on the search seed's validation half, "
                                    "then the experiments' jobs over every seed at the chosen points; results.csv, "
                                    "results.md and report.html under ROOT/<machine>/. Rerun to continue.")
    pa.add_argument("names", nargs="*", help="table2 table3 table4 table5 fig4 fig5 fig6 fig7 fn_rate fn_ablation, "
                    "or all (default with --verdict: the claims' core)")
    pa.add_argument("--verdict", action="store_true", help="the claims' core (Table 2's personalised rows, Fig. 4, "
                    "Table 4) over 10 seeds unless --seeds says otherwise")
    pa.add_argument("--no-search", action="store_true", help="the paper's values, no search")
    pa.add_argument("--quick", action="store_true", help="tiny data, one seed, tiny epochs (tests)")
    pa.add_argument("--via", choices=("notebook", "process"), default="process", help="how fixed jobs run")
    _common(pa, "outputs/paper", [0])
    _searching(pa)

    se = sub.add_parser("search", help="search methods on validation, then train the chosen points over seeds",
                        formatter_class=_Formatter)
    se.add_argument("methods", nargs="+", help="npair bpr fnd fnd-cl, a distillation loss, a baseline, or all")
    se.add_argument("--quick", action="store_true", help="tiny data, one seed, tiny epochs (tests)")
    _common(se, "outputs/paper", [0])
    _searching(se)

    la = sub.add_parser("lab", help="the false-negative lab (fn_rate, fn_ablation)", formatter_class=_Formatter)
    la.add_argument("names", nargs="+", help="fn_rate, fn_ablation")
    la.add_argument("--breadths", nargs="+", type=float, default=None, help="taste breadths (default: the lab's)")
    _common(la, "outputs/fnlab", [0, 1, 2])

    di = sub.add_parser("distill", help="the distillation benchmark: every distillation method, searched, over seeds",
                        formatter_class=_Formatter,
                        description="Per seed on the rich benchmark: the pre-trained teacher, the XS student with "
                                    "N-pair, and each distillation method (FND, KD, …) at the point its search chose "
                                    "on validation; the report gives each method's gain over N-pair and the share "
                                    "of the teacher's margin it transfers.")
    di.add_argument("--methods", nargs="+", default=None, help="distillation methods (default: every registered one)")
    di.add_argument("--full", action="store_true", help="also Fig. 6's sizes, the lab's rows and FND-CL")
    di.add_argument("--image-size", type=_bounded(int, 16, "an integer"), default=32,
                    help="pixels per side (>= 16; 32 on CPU)")
    di.add_argument("--verdict", action="store_true", help="10 seeds unless --seeds says otherwise")
    _common(di, "outputs/distill", [0])
    _searching(di)


def _tool_verbs(sub) -> None:
    """One stage, a stage's parameters, the timed chain, the bench, the pre-training probe."""
    _train_parsers(sub)
    _timed_chain_parser(sub)
    _bench_parser(sub)
    _pretrain_parser(sub)


def _train_parsers(sub) -> None:
    tr = sub.add_parser("train", help="one training stage as its notebook does (torchrun: several processes)",
                        formatter_class=_Formatter,
                        description="Train one stage with exactly the parameters of its notebook (02_teacher, "
                                    "03_student, 04_contrastive, 07_baselines); a name the notebook lacks is "
                                    "refused with the valid ones. Under torchrun (torchrun --nproc_per_node=2 -m "
                                    "fndkit train ...) each process trains its share of every batch (batch_size is "
                                    "the global batch) and rank 0 alone writes the run folder.")
    tr.add_argument("--run-dir", required=True, help="the run folder (what the notebook calls run_dir)")
    tr.add_argument("--stage", required=True, choices=TRAINING_STAGES, help="which notebook's stage")
    tr.add_argument("--out-name", default=None, help="the stage folder (the notebook's out_name; default: "
                    "named from the parameters)")
    tr.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a notebook parameter, read as papermill's -p reads it (True, None, 3, 0.5, text)")
    tr.add_argument("-y", "--yaml", action="append", default=[], metavar="YAML",
                    help="notebook parameters as a YAML mapping (for lists): -y 'snapshot_epochs: [1, 2]'")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")

    pa = sub.add_parser("params", help="a stage's parameters and their defaults", formatter_class=_Formatter,
                        description="Print the parameters cell of the notebook behind a training stage: what "
                                    "`train -p` accepts, with the defaults.")
    pa.add_argument("--stage", required=True, choices=TRAINING_STAGES, help="which notebook's stage")


def _timed_chain_parser(sub) -> None:
    tc = sub.add_parser("timed-chain", help="the whole chain at one scale, timed stage by stage (JSON)",
                        formatter_class=_Formatter,
                        description="Data, autoencoder, teacher, FND student, FND-CL and cold start at one scale "
                                    "through the executor (one seed, the notebooks' defaults within the bounds "
                                    "below), each stage timed (wall seconds, peak CUDA memory), then every model's "
                                    "scoring of the test candidates and the image transfer. The JSON record is "
                                    "rewritten after every stage, so a run stopped by a time limit (SIGINT) keeps "
                                    "what it measured (scripts/gpu_630.sh).")
    tc.add_argument("--run-dir", required=True, help="a new or empty folder (reused stages would time nothing)")
    tc.add_argument("--report", required=True, help="where the JSON record goes")
    tc.add_argument("--scale", default="polyvore630", help="the synthetic benchmark's scale")
    tc.add_argument("--seed", type=_seed, default=0, help="the data's and every stage's seed")
    tc.add_argument("--epochs", type=_positive_int, default=2, help="epochs of every training stage")
    tc.add_argument("--max-steps-per-epoch", type=_count, default=300, help="steps per epoch at most; 0: whole "
                    "epochs")
    tc.add_argument("--autoencoder-epochs", type=_positive_int, default=1, help="the autoencoder's epochs")
    tc.add_argument("--cold-repetitions", type=_positive_int, default=3, help="cold-start repetitions")
    tc.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    tc.add_argument("--no-progress", action="store_true", help="one line per stage instead of a live display")


def _bench_parser(sub) -> None:
    be = sub.add_parser("bench", help="scoring (cached vs per-outfit), one training step part by part, memory",
                        formatter_class=_Formatter,
                        description="Generate the benchmark at --scale, then measure scoring every user's test "
                                    "candidates (cached against per outfit), one training step split into its "
                                    "parts (teacher, FND student, FND-CL student) and the peak memory; JSON to "
                                    "--out, tables on the console (fndkit/bench/profile.py). --scale "
                                    f"{BENCH_JPEG_SCALE}: training fed from a generated JPEG release "
                                    "(fndkit/bench/jpeg.py).")
    be.add_argument("--scale", default="polyvore630", help=f"a synthetic scale, or {BENCH_JPEG_SCALE}")
    be.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    be.add_argument("--users", type=_users, default="default", help="users whose candidates are re-encoded per "
                    f"outfit: a number, 'all', or 'default' (all on CUDA, {BENCH_CPU_USERS} on CPU)")
    be.add_argument("--steps", type=_positive_int, default=20, help="timed training steps per objective")
    be.add_argument("--warmup", type=_count, default=2, help="untimed training steps before them")
    be.add_argument("--seed", type=_seed, default=0, help="the generated benchmark's and the models' seed")
    be.add_argument("--out", default=None, help="JSON path (default: outputs/bench/<scale>-<device>.json)")
    jpeg = be.add_argument_group(f"--scale {BENCH_JPEG_SCALE} (the real-layout bench)")
    jpeg.add_argument("--items", type=_positive_int, default=None,
                      help="items of the generated release (default: Polyvore-630's 199,537; fewer to run reduced)")
    jpeg.add_argument("--fly-steps", type=_count, default=2, help="steps fed by decoding JPEGs every step (0: skip)")
    jpeg.add_argument("--workers", type=_positive_int, default=None, help="decoding processes (default: every core)")
    jpeg.add_argument("--keep-store", action="store_true", help="reuse a decoded store instead of timing the decode")
    jpeg.add_argument("--fixture-dir", default=None, help="where the generated release and its store live "
                      f"(default: outputs/bench/fixtures/{BENCH_JPEG_SCALE}-<items>)")


def _pretrain_parser(sub) -> None:
    pr = sub.add_parser("pretrain", help="the teacher's attribute pre-training (the distillation benchmark)",
                        formatter_class=_Formatter,
                        description="Pre-train item CNNs to classify the generator's attributes of items drawn "
                                    "with other seeds (the paper's ImageNet pre-training, fndkit/pretrain.py); "
                                    "their held-out accuracy on the benchmark's items probes what each backbone "
                                    "can see.")
    pr.add_argument("--run-dir", required=True, help="a run folder whose 00_data stage is done (synthetic)")
    pr.add_argument("--backbone", nargs="+", default=["cnn-small"], help="several: a probe of each")
    pr.add_argument("--epochs", type=_positive_int, default=10, help="pre-training epochs")
    pr.add_argument("--aux-sets", type=_count, default=4, help="train on this many generated item sets of other "
                    "seeds (0: the benchmark's trained-pool items, holding out its cold pool)")
    pr.add_argument("--seed", type=_seed, default=0, help="training seed (the auxiliary items' too)")
    pr.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    pr.add_argument("--out", default=None, help="state-dict file of the (first) backbone's conv layers")
    pr.add_argument("--json", default=None, help="write every backbone's history here")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a malformed option (2, one line already printed)
        return int(exc.code or 0)
    if args.verb is None:
        parser().print_help()
        return 2
    try:
        return VERB_RUNNERS[args.verb](args, argv)
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): rerun the same command to continue (finished stages are reused)",
              file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 — one line for the user's input errors, named by type
        from .plans.execute import JobError

        if isinstance(exc, JobError):
            print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
        if isinstance(exc, ValueError):  # ConfigError, StudyError, SearchError, ExperimentError …
            print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        raise


# ------------------------------------------------------------------------------------------------
# Verbs: build → run_plan → collect → report

def check_root(path: str) -> Path:
    """A folder fndkit can create and write (not a file, not under one, writable), checked before
    any work (:func:`fndkit.rundir.check_run_dir`); creates nothing."""
    from .rundir import StageError, check_run_dir

    try:
        check_run_dir(path)
    except StageError as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    return Path(path).expanduser()


def dispatcher(args, root: Path, identity: dict):
    from .plans.execute import Local

    if args.storage:
        from .plans.study import Study

        study = Study(root, None if args.storage == "journal" else args.storage, args.study_prefix, identity,
                      workers=args.workers, threads=args.threads, prune=not getattr(args, "no_prune", False))
        study.check()  # an unreachable storage or another plan's studies: refused before any work
        return study
    return Local(args.workers, args.threads)


def check_readme(args, block: str | None) -> None:
    """``--readme`` names a README holding the verb's block (checked before any work)."""
    if not args.readme:
        return
    if block is None:
        raise UserError(f"--readme: `{args.verb}` writes no README block (its tables are in its results.md)")
    from .results.report import check_readme as check

    try:
        check(args.readme, block)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def command_line(argv: list[str]) -> str:
    return "python -m fndkit " + " ".join(shlex.quote(a) for a in argv)


REPORT_ONLY = ("--collect-only", "--worker-only", "--no-progress")


def reproduce_line(argv: list[str]) -> str:
    """The command a report names: the call that trains, without the options that only change what
    this call wrote (``--collect-only``, ``--readme PATH``, ``--no-progress``)."""
    kept, skip = [], False
    for a in argv:
        if skip or a in REPORT_ONLY or a.startswith("--readme="):
            skip = False
            continue
        skip = a == "--readme"
        if not skip:
            kept.append(a)
    return command_line(kept)


def _chain(args, argv) -> int:
    from .plans import chain

    check_root(args.run_dir)
    jobs = chain.default_chain(args.scale, seed=args.seed, run_dir=args.run_dir)
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {j.label for j in jobs})
        if unknown:
            raise UserError(f"unknown step(s) {unknown}; the chain is {[j.label for j in jobs]}")
        jobs = [j for j in jobs if j.label in wanted]
    try:
        record = chain.run_chain(args.run_dir, jobs, force=args.force, kernel_name=args.kernel, via=args.via,
                                 workers=args.workers, threads=args.threads)
    except chain.PipelineInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except chain.PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from .progress import summary_table

    print(f"\nseconds per notebook:\n{summary_table(record['steps'])}\n")
    print(f"finished {len(record['steps'])} notebooks in {record['seconds']:.0f} s of wall time; report: "
          f"{Path(record['run_dir']) / 'report.md'}")
    return 0


def _values(args, methods) -> dict:
    from .plans import search

    values = search.parse_values(args.values)
    unknown = sorted(set(values) - set(methods))
    if unknown:
        raise UserError(f"--values names {unknown[0]!r}, which is not searched here ({', '.join(methods)})")
    return values


def _paper(args, argv, only: tuple = ()) -> int:
    from .plans import paper, search
    from .results import claims as C
    from .results import collect

    root = check_root(args.root)
    check_readme(args, "results")
    verdict = args.verdict
    names = paper.check_names(args.names or (list(paper.VERDICT_NAMES) if verdict else ["all"]))
    seeds = paper.VERDICT_SEEDS if verdict and args.seeds == [0] else tuple(args.seeds)
    sweep = paper.Sweep(root, seeds=seeds[:1] if args.quick else seeds, scale=args.scale, quick=args.quick,
                        device=args.device, shared=verdict, verdict=verdict,
                        methods=only or (paper.VERDICT_METHODS if verdict else ()))
    searched = [] if args.no_search else [m for m in paper.table2_methods(sweep) if search.space(m)]
    search_seed = sweep.seeds[0] if args.search_seed is None else args.search_seed
    values = _values(args, searched)  # refused before anything is written
    spaces = {m: search.restrict(m, values.get(m) or (paper.VERDICT_SPACES.get(m) if verdict else None))
              for m in searched}
    dispatch = dispatcher(args, sweep.folder, sweep.identity())
    trials, prereq = {}, []
    if searched:
        bases = paper.search_bases(searched, sweep, search_seed)
        trials = {m: search.trials(m, _smoke(bases[m], args), spaces[m]) for m in searched}
        prereq = [_smoke(j, args) for j in paper.prerequisites(sweep, search_seed)]

    def build(chosen: dict) -> list:
        sweep.chosen = {m: c["values"] for m, c in chosen.items()}
        if "alpha" in sweep.chosen.get("fnd", {}) and "fnd-cl" in sweep.chosen:
            print(f"fnd-cl: trains at FND's chosen α = {sweep.chosen['fnd']['alpha']} (one change at a time)")
        return paper.plan(names, sweep)

    chosen, trial_jobs, jobs, outcome = _searched_plan(args, sweep.folder, prereq, trials, build, dispatch)
    if chosen is None or args.worker_only:
        return _finish(outcome, None)
    if "table5" in names and not args.collect_only:
        from .bench.profile import table5_record

        table5_record(sweep.folder, [sweep.seed_dir(s) for s in sweep.seeds], device=args.device,
                      repeats=2 if args.quick else 10)
    table = collect.collect(trial_jobs + jobs, records=[sweep.folder / "table5.json"])
    claims = C.compare(collect.collect_users(jobs), list(paper.CLAIMS))
    done = sorted({int(s) for s in table[table.list == "test"].seed}) if len(table) else []
    info = {"title": f"fndkit — the paper's evidence on {sweep.machine}", "machine": sweep.machine,
            "seeds": done, "planned": list(sweep.seeds), "scale": sweep.scale}
    return _publish(args, argv, sweep.folder, outcome, info, table, claims=claims, chosen=chosen, block="results")


def _searched_plan(args, folder: Path, prerequisites, trials: dict, build, dispatch):
    """A searched plan's two phases: the prerequisites and every method's trials, the choice, then
    ``build(chosen)``'s jobs, with the chosen trials handed over (not trained twice). Returns
    (chosen, trial jobs, jobs, outcome of both phases); chosen is None when nothing could be chosen."""
    from .plans import search

    start = time.perf_counter()
    chosen, phase = {}, None
    if trials:
        chosen, phase = _search_phase(args, prerequisites, trials, dispatch, folder / "plan.json")
        if chosen is None:
            return None, [], [], phase
    trial_jobs = [t for ts in trials.values() for t in ts]
    jobs = [_smoke(j, args) for j in build(chosen)]
    if trial_jobs and not args.collect_only:
        search.adopt_matching(trial_jobs, jobs)
    left = None if args.time_limit is None else max(args.time_limit - (time.perf_counter() - start), 1e-3)
    outcome = _run(args, jobs, dispatch, folder / "plan.json", left)
    if phase is not None:
        outcome.failed = phase.failed + outcome.failed
    return chosen, trial_jobs, jobs, outcome


def _publish(args, argv, folder: Path, outcome, info: dict, table, claims=None, transfer=None, chosen=None,
             block: str | None = None) -> int:
    """The plan's report from its one table (results.csv, results.md, report.html), the README
    block with ``--readme``, the results notebook of a verdict plan; the exit code."""
    from .results import report

    info = {**info, "command": reproduce_line(argv), "seconds": wall_seconds(folder), "workers": args.workers}
    paths = report.write_plan_report(folder, info, table, claims, transfer, chosen)
    if block and args.readme:
        report.update_readme(args.readme, paths["md"].read_text(), block)
    return _finish(outcome, _results_notebook(args, folder, paths))


def _search_phase(args, prerequisites, trials: dict, dispatch, record: Path):
    """Phase one of a searched plan: the search seed's prerequisites and every method's trials, then
    the choice. Returns (chosen, the phase's outcome); chosen is None when a job failed and nothing
    could be chosen (the verb names the failures and exits 1)."""
    from .plans import search

    for line in search.describe_unsearchable(trials):
        print(f"note: {line}")
    trial_jobs = [t for ts in trials.values() for t in ts]
    print(f"search: {len(trial_jobs)} trials of {len(trials)} method(s) on the search seed's validation half")
    outcome = _run(args, list(prerequisites) + trial_jobs, dispatch, record, args.time_limit)
    try:
        chosen = search.choose(trials, outcome) if trials else {}
    except search.SearchError:
        if outcome.failed:  # a job failed (a prerequisite, a trial): name it, exit 1
            return None, outcome
        raise
    for m, c in chosen.items():
        print(f"{m}: chose {c['values']} (validation AUC {c['val_auc']:.4f}, {c['trials']} trials, "
              f"{c['pruned']} pruned)")
    return chosen, outcome


def _run(args, jobs, dispatch, record, time_limit=None):
    """``run_plan`` as the shared options ask (``--collect-only``: nothing runs)."""
    from .plans.execute import run_plan

    if args.collect_only:
        return _recorded(jobs, dispatch)
    return run_plan(jobs, via=getattr(args, "via", "process"), dispatch=dispatch, time_limit=time_limit,
                    on_failure="continue", record=record, progress=False if args.no_progress else True)


def _recorded(jobs, dispatch):
    """``--collect-only``: nothing runs; a study storage still says which trials were pruned."""
    from .plans.execute import PlanOutcome, Schedule, ordered

    plan = ordered(jobs)
    outcome = PlanOutcome(not_started=plan)
    if hasattr(dispatch, "prune"):  # a Study: read what its trials' states say (no worker started)
        import dataclasses

        session = dataclasses.replace(dispatch, workers=1, threads=None).open(plan, "process", {})
        try:
            for ended in session.sync(Schedule(plan)):
                if ended.error is None:
                    outcome.records.append({"key": ended.job.key, **ended.info})
        finally:
            session.close()
    return outcome


def _smoke(job, args):
    """``--epochs`` caps every training job; ``--quick`` also keeps epochs to a few steps."""
    changes = {}
    if job.kind in ("teacher", "student", "contrastive", "baseline"):
        if args.epochs:
            changes["epochs"] = args.epochs
        if getattr(args, "quick", False):
            changes["max_steps_per_epoch"] = 2
    fields = set(job.params.field_names())
    changes = {k: v for k, v in changes.items() if k in fields}
    return job.with_params(**changes) if changes else job


def wall_seconds(folder: Path) -> float:
    """The plan's true wall time: every call's seconds, from its record (``plan.json``)."""
    import json

    try:
        return float(json.loads((Path(folder) / "plan.json").read_text()).get("seconds_total", 0.0))
    except (ValueError, OSError):  # no record yet, or an unreadable one: its time is unknown, not fatal
        return 0.0


def _results_notebook(args, folder: Path, paths: dict) -> dict:
    """A verdict plan also executes notebooks/09_results.ipynb on its report (``paths["notebook"]``;
    a failure is ``paths["notebook_error"]``: the tables stay written, the verb exits 1)."""
    if getattr(args, "verdict", False):
        from .plans.execute import JobError, execute_results_notebook

        try:
            paths["notebook"] = execute_results_notebook(folder)
        except JobError as exc:
            paths["notebook_error"] = str(exc)
    return paths


def _finish(outcome, paths: dict | None) -> int:
    print(outcome.describe())
    if paths:
        print(f"results: {paths['csv']}; report: {paths['html']} (and {paths['md'].name})"
              + (f"; notebook: {paths['notebook']}" if "notebook" in paths else ""))
        if "notebook_error" in paths:
            print(paths["notebook_error"], file=sys.stderr)
            return 1
    return 1 if outcome.failed else 0


def _search(args, argv) -> int:
    """``paper table2`` restricted to ``methods`` (searched, then trained at the chosen points)."""
    args.names, args.verdict, args.no_search, args.via = ["table2"], False, False, "process"
    from .plans import search

    methods = search.methods() if args.methods == ["all"] else list(dict.fromkeys(args.methods))
    for m in methods:
        search.declared_space(m)  # an unknown method, named
    return _paper(args, argv, only=tuple(methods))


def _lab(args, argv) -> int:
    from .plans import lab
    from .results import claims as C
    from .results import collect
    from .repro import machine_label

    root = check_root(args.root)
    check_readme(args, None)
    unknown = sorted(set(args.names) - set(lab.EXPERIMENTS))
    if unknown:
        raise UserError(f"unknown lab experiment(s) {unknown}; choose from {sorted(lab.EXPERIMENTS)}")
    if args.breadths is not None and any(not 0 < b < 10 for b in args.breadths):
        raise UserError(f"--breadths {args.breadths} must be taste breadths > 0 (the lab's are {lab.BREADTHS})")
    if args.scale not in lab.LAB_SCALES:
        raise UserError(f"--scale {args.scale!r} has no lab budget; choose one of {list(lab.LAB_SCALES)}")
    folder = root / machine_label(args.device)
    jobs = []
    for name in args.names:
        kwargs = {"breadths": tuple(args.breadths)} if args.breadths else {}
        jobs += [_smoke(j, args) for j in lab.EXPERIMENTS[name](folder, seeds=args.seeds, scale=args.scale,
                                                               device=args.device, **kwargs)]
    outcome = _run(args, jobs, dispatcher(args, folder, {"folder": str(folder), "scale": args.scale}),
                   folder / "plan.json", args.time_limit)
    if args.worker_only:
        return _finish(outcome, None)
    table = collect.collect(jobs)
    users = collect.collect_users(jobs)
    claims = C.compare(users, lab.comparisons(jobs))
    info = {"title": "fndkit — the false-negative lab", "machine": folder.name, "seeds": list(args.seeds),
            "scale": args.scale}
    return _publish(args, argv, folder, outcome, info, table, claims=claims)


def _distill(args, argv) -> int:
    from .plans import distill, search
    from .results import claims as C
    from .results import collect

    root = check_root(args.root)
    check_readme(args, "distill")
    if args.scale not in ("tiny", "demo"):
        raise UserError(f"--scale {args.scale!r}: the distillation benchmark has presets tiny-rich and demo-rich; "
                        f"use tiny or demo")
    seeds = distill.VERDICT_SEEDS if args.verdict and args.seeds == [0] else tuple(args.seeds)
    plan = distill.Distill(root, seeds, args.scale, args.image_size, args.device, args.epochs, args.methods,
                           args.full, args.search_seed, shared=args.verdict)
    for m in plan.methods:
        search.declared_space(m)
    plan.values = _values(args, plan.searched())
    phase1, trials = plan.search_plan()  # a value outside a space: refused before anything is written
    dispatch = dispatcher(args, root, plan.identity())
    trial_keys = {t.key for ts in trials.values() for t in ts}
    chosen, trial_jobs, jobs, outcome = _searched_plan(args, root, [j for j in phase1 if j.key not in trial_keys],
                                                       trials, plan.plan, dispatch)
    if chosen is None or args.worker_only:
        return _finish(outcome, None)
    table = collect.collect(trial_jobs + jobs)
    transfer = C.transfer(table, collect.collect_users(jobs), "distill", "npair", "teacher", plan.methods,
                          protocols=("random", "hard"))
    from .repro import machine_label

    done = sorted({int(s) for s in table[(table.experiment == "distill") & (table.list == "test")].seed})
    info = {"title": "fndkit — the distillation benchmark", "machine": machine_label(args.device), "seeds": done,
            "planned": list(seeds), "scale": f"{args.scale}-rich"}
    return _publish(args, argv, root, outcome, info, table, transfer=transfer, chosen=chosen, block="distill")


# ------------------------------------------------------------------------------------------------
# Tool verbs: one library call each


@contextlib.contextmanager
def _user_errors(errors: tuple):
    """The library's own input errors (a missing dataset, a stage without a teacher …) as one line, exit 2."""
    try:
        yield
    except errors as exc:
        raise UserError(str(exc).splitlines()[0]) from None


def _train(args, argv) -> int:
    from . import run

    check_root(args.run_dir)
    with _user_errors(run.USER_ERRORS):
        params = run.stage_parameters(args.stage, args.run_dir, args.out_name, args.param, args.yaml)
        run.train(args.stage, params, progress=not args.no_progress)
    return 0


def _params(args, argv) -> int:
    from . import run

    print(run.describe_parameters(args.stage))
    return 0


def _timed_chain(args, argv) -> int:
    from . import run
    from .bench.chain import timed_chain

    check_root(args.run_dir)
    check_root(str(Path(args.report).expanduser().parent))
    with _user_errors(run.USER_ERRORS):
        record = timed_chain(args.run_dir, scale=args.scale, seed=args.seed, epochs=args.epochs,
                             max_steps_per_epoch=args.max_steps_per_epoch or None,
                             autoencoder_epochs=args.autoencoder_epochs, cold_repetitions=args.cold_repetitions,
                             device=args.device, report=args.report, progress=not args.no_progress,
                             command=command_line(argv))
    print(f"chain finished in {record['wall_s']} s; record in {args.report}")
    return 0


def _bench(args, argv) -> int:
    from .bench import jpeg, profile

    if args.out:
        check_root(str(Path(args.out).expanduser().parent))
    if args.scale == BENCH_JPEG_SCALE:
        result = jpeg.run_jpeg_bench(args.items or jpeg.POLYVORE630["items"], args.device,
                                     steps=args.steps, warmup=args.warmup, fly_steps=args.fly_steps,
                                     workers=args.workers, seed=args.seed, keep_store=args.keep_store,
                                     fixture=args.fixture_dir)
        tables = jpeg.format_jpeg_tables(result)
    else:
        result = profile.run_bench(args.scale, args.device, users=args.users, steps=args.steps, seed=args.seed,
                                   warmup=args.warmup)
        tables = profile.format_tables(result)
    path = profile.save_result(result, args.out, command_line(argv))
    print(f"\n{tables}\n\nwritten: {path}")
    return 0


def _pretrain(args, argv) -> int:
    from . import pretrain

    if not Path(args.run_dir).expanduser().is_dir():
        raise UserError(f"--run-dir {args.run_dir!r} is not a folder; give a run folder whose 00_data stage is "
                        f"done (python -m fndkit chain --run-dir R --only 00_data)")
    for path in (args.out, args.json):
        if path:
            check_root(str(Path(path).expanduser().parent))
    with _user_errors(pretrain.USER_ERRORS):
        pretrain.probe(args.run_dir, args.backbone, epochs=args.epochs, aux_sets=args.aux_sets, seed=args.seed,
                       device=args.device, out=args.out, json_path=args.json)
    return 0


VERB_RUNNERS = {"chain": _chain, "paper": _paper, "search": _search, "lab": _lab, "distill": _distill,
                "train": _train, "params": _params, "timed-chain": _timed_chain, "bench": _bench,
                "pretrain": _pretrain}
