"""One command line: ``python -m fndkit <verb> ...``.

    python -m fndkit chain  --run-dir outputs/demo --scale demo     # the notebook chain (make demo)
    python -m fndkit search fnd npair --seeds 0 1 2 --workers 2      # search on validation, then seeds
    python -m fndkit paper  table2 fig4 --seeds 0 1 2                # search, then the paper's tables (make paper)
    python -m fndkit lab    fn_rate fn_ablation --seeds 0 --workers 4  # the false-negative lab
    python -m fndkit train  --run-dir R --stage student -p alpha=2    # one training stage (torchrun too)
    python -m fndkit params --stage student                          # a stage's parameters
    python -m fndkit timed-chain --run-dir R --scale polyvore630 --report r.json
    python -m fndkit bench  --scale demo                             # scoring and step profiles
    python -m fndkit distill --out outputs/distill --seeds 0 1 2     # the distillation benchmark's evidence

Every verb builds jobs from the stages' ``Params`` and runs them with :func:`fndkit.jobs.run_plan`
(``train`` and ``timed-chain`` call the stages directly), except ``search`` and ``paper``, whose jobs
are trials in an Optuna study storage that any number of workers share (:mod:`fndkit.search`).
``python -m fndkit <verb> -h`` says more.
"""

from __future__ import annotations

import sys

from . import bench, distill, fnlab, pipeline, pretrain, run, search

# verb -> the module command line it hands the rest of the arguments to (and a verb of its own)
VERBS = {"chain": (pipeline.main, None), "paper": (search.paper_main, None), "search": (search.main, None),
         "lab": (fnlab.main, None),
         "train": (run.main, "train"), "params": (run.main, "params"), "timed-chain": (run.main, "chain"),
         "bench": (bench.main, None), "distill": (distill.main, None), "pretrain": (pretrain.main, None)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"python -m fndkit: unknown verb {verb!r}; choose one of {', '.join(VERBS)}", file=sys.stderr)
        return 2
    command, sub = VERBS[verb]
    return command([sub, *rest] if sub else rest)


if __name__ == "__main__":
    sys.exit(main())
