#!/usr/bin/env bash
# The real-layout bench on one GPU (issue 24's device figures), in one call:
#
#   OUT=/path/for/results scripts/gpu_bench_jpeg.sh
#
# Runs `python -m fndkit bench --scale polyvore630-jpeg` (fndkit/bench/jpeg.py): builds (once,
# under FIXTURES) a generated release in the Polyvore-U layout with ITEMS 291 px JPEGs (199,537 by
# default: Polyvore-630's count; ~5.5 GB of JPEGs, then a ~30 GB uint8 store at 224 px and the same
# 30 GB again in memory for the in-memory bound), decodes it once over every core, then times the
# alexnet-large teacher and the alexnet-xs student fed from the store, from memory, and by decoding
# JPEGs at every step (FLY_STEPS), with nvidia-smi sampled for the GPU's busy fraction.
#   ITEMS (199537), STEPS (20) timed steps per source, FLY_STEPS (3), LIMIT_S (560) stops it with
#   SIGINT if it runs longer (a shorter run: ITEMS=50000).
#   TINY=1 checks the script itself on a CPU (200 items, one timed step per source of the real
#   224 px pair: a few minutes on a 2-core box).
# Writes $OUT/bench_jpeg.json (everything the bench measured), $OUT/bench_jpeg.log and
# $OUT/nvidia-smi.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PY=${PY:-.venv/bin/python}
if [ "${TINY:-0}" = "1" ]; then
    ITEMS=${ITEMS:-200}; STEPS=${STEPS:-1}; FLY_STEPS=${FLY_STEPS:-1}; WARMUP=${WARMUP:-1}
fi
ITEMS=${ITEMS:-199537}
STEPS=${STEPS:-20}
FLY_STEPS=${FLY_STEPS:-3}
WARMUP=${WARMUP:-2}
LIMIT_S=${LIMIT_S:-560}
FIXTURES=${FIXTURES:-outputs/bench/fixtures/polyvore630-jpeg-$ITEMS}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/nvidia-smi.txt"
df -h "$(dirname "$FIXTURES")" 2>/dev/null | tail -1 >> "$OUT/nvidia-smi.txt" || true

start=$(date +%s)
timeout -s INT "$LIMIT_S" "$PY" -m fndkit bench --scale polyvore630-jpeg --items "$ITEMS" --steps "$STEPS" \
    --warmup "$WARMUP" --fly-steps "$FLY_STEPS" --device auto --fixture-dir "$FIXTURES" --out "$OUT/bench_jpeg.json" \
    2>&1 | tr '\r' '\n' | grep -v '^\s*$' | awk '!/img\/s\]$/ || NR % 20 == 0' | tee "$OUT/bench_jpeg.log"
rc=${PIPESTATUS[0]}
echo "bench exit code $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/bench_jpeg.log"
exit "$rc"
