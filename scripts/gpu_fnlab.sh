#!/usr/bin/env bash
# The false-negative lab (fn_rate + fn_ablation) at demo scale over three seeds on one GPU: issue
# 13's evidence. The runs execute in-process in JOBS worker processes that share the GPU
# (`python -m fndkit lab`, see fndkit.plans.lab): per run folder (taste breadth × seed) the
# dataset and teacher, then every student, then the teacher's diagnostics; lowest seed first.
#
#   OUT=/path/for/results scripts/gpu_fnlab.sh
#
# LIMIT_S: no run starts after it (runs going on finish; KILL_S kills everything as a last resort);
# the tables are then read back from every finished run, so a cut-short plan still reports whole
# seeds. SCALE=tiny DEVICE=cpu JOBS=2 checks the script itself on a CPU in a minute or two.
# Writes to $OUT: results.csv, gains.csv, diagnostics.csv, summary.md, lab.json, fnlab.log,
# nvidia-smi.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PY=${PY:-python3}
JOBS=${JOBS:-12}
LIMIT_S=${LIMIT_S:-400}
KILL_S=${KILL_S:-540}
SEEDS=${SEEDS:-0 1 2}
SCALE=${SCALE:-demo}
DEVICE=${DEVICE:-cuda}
ROOT=${ROOT:-$(mktemp -d /tmp/fndkit-lab-XXXXXX)}
EXPERIMENTS=${EXPERIMENTS:-fn_rate fn_ablation}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/nvidia-smi.txt"
# shellcheck disable=SC2086  # word splitting of SEEDS and EXPERIMENTS is intended
common=($EXPERIMENTS --seeds $SEEDS --scale "$SCALE" --root "$ROOT" --device "$DEVICE" --no-progress)

start=$(date +%s)
timeout -s KILL "$KILL_S" "$PY" -m fndkit lab "${common[@]}" --workers "$JOBS" --time-limit "$LIMIT_S" \
    > "$OUT/fnlab.log" 2>&1
rc=$?
echo "lab exit code $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/fnlab.log"
"$PY" -m fndkit lab "${common[@]}" --collect-only >> "$OUT/fnlab.log" 2>&1
for f in results.csv results.md report.html plan.json; do
    for g in "$ROOT"/*/"$f"; do [ -f "$g" ] && cp "$g" "$OUT/$f"; done
done
tail -n 60 "$OUT/fnlab.log"
exit "$rc"
