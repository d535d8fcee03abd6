#!/usr/bin/env bash
# The distillation benchmark's evidence (issue 23) on one GPU: the rich appearance at demo scale,
# three seeds. Per seed: data, the teacher's attribute pre-training on generated items of other
# seeds, the teacher, the α grid of FND XS students (α* chosen on the student's validation half),
# Fig. 6 (XS / S / M with N-pair and FND α*), Table 2's N-pair / FND / FND-CL rows and the
# false-negative lab's oracle and ablation rows (`python -m fndkit distill`, see its docstring).
# Jobs run in JOBS worker processes sharing the GPU; finished stages are reused, so running the
# script again continues a cut-short run.
#
#   OUT=/path/for/results scripts/gpu_distill.sh
#
# LIMIT_S: no job starts after it; KILL_S kills everything as a last resort; the tables are then
# read back from every finished stage. SCALE=tiny EPOCHS=1 DEVICE=cpu JOBS=2 checks the script on
# a CPU in a few minutes. FULL= (empty) runs only the core: the teacher, XS N-pair and each distillation method.
# Writes to $OUT: results.md, results.json, distill.log, nvidia-smi.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PY=${PY:-python3}
JOBS=${JOBS:-12}
LIMIT_S=${LIMIT_S:-420}
KILL_S=${KILL_S:-560}
SEEDS=${SEEDS:-0 1 2}
SCALE=${SCALE:-demo}
DEVICE=${DEVICE:-cuda}
FULL=${FULL:-1}
EPOCHS=${EPOCHS:-}
ROOT=${ROOT:-$(mktemp -d /tmp/fndkit-distill-XXXXXX)}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/nvidia-smi.txt"
# shellcheck disable=SC2086  # word splitting of SEEDS is intended
common=(--root "$ROOT" --seeds $SEEDS --scale "$SCALE" --device "$DEVICE" ${FULL:+--full} ${EPOCHS:+--epochs "$EPOCHS"})

start=$(date +%s)
timeout -s KILL "$KILL_S" "$PY" -m fndkit distill "${common[@]}" --workers "$JOBS" --threads 1 --time-limit "$LIMIT_S" \
    > "$OUT/distill.log" 2>&1
rc=$?
echo "distill exit code $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/distill.log"
[ "$rc" -eq 0 ] || "$PY" -m fndkit distill "${common[@]}" --collect-only >> "$OUT/distill.log" 2>&1
for f in results.md results.csv report.html plan.json; do
    [ -f "$ROOT/$f" ] && cp "$ROOT/$f" "$OUT/$f"
done
tail -n 70 "$OUT/distill.log"
exit "$rc"
