#!/usr/bin/env bash
# N identical fndkit workers on one study storage, as a Slurm job array: each array task runs the
# same command with --worker-only (no report); the storage (a PostgreSQL URL every node reaches)
# hands each job of the plan — search trials and fixed runs alike — to exactly one worker.
#
#   STORAGE=postgresql://fndkit:PASSWORD@db-host:5432/fndkit \
#     sbatch --array=0-7 --gres=gpu:1 scripts/slurm_workers.sh paper all --seeds 0 1 2
#
# Every node must see the same --root (a shared file system): the run folders are the jobs'
# artifacts. WORKERS=K runs K workers per task (they share its GPU). When the array has finished, run the
# same command once without --worker-only (anywhere) to collect results.csv and report.html; it
# trains nothing more. A task killed by Slurm (time limit, preemption) leaves its job RUNNING in the
# storage; any later worker fails it and enqueues it again, resumed from its last.pt
# (fndkit/plans/study.py, "Faults").
#SBATCH --job-name=fndkit-workers
#SBATCH --output=fndkit-worker-%A_%a.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
: "${STORAGE:?set STORAGE to a postgresql:// URL that every node reaches}"
PY=${PY:-python3}
ROOT=${ROOT:-outputs/paper}
[ $# -gt 0 ] || set -- paper all --seeds 0
args=("$@" --root "$ROOT" --storage "$STORAGE" --worker-only --via process)
if [ -n "${WORKERS:-}" ]; then
    args+=(--workers "$WORKERS")
fi
echo "task ${SLURM_ARRAY_TASK_ID:-0} on $(hostname): $PY -m fndkit ${args[*]//$STORAGE/<storage>}"
exec "$PY" -m fndkit "${args[@]}"
