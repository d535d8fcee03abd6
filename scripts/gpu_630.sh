#!/usr/bin/env bash
# The whole chain at Polyvore-630 scale on one GPU, timed stage by stage (issue 16's GPU evidence).
#
#   OUT=/path/for/results scripts/gpu_630.sh
#
# Run from a fresh checkout after `make setup` (no internet needed). It generates the synthetic
# benchmark at polyvore630 scale (630 users, 162,945 outfits, 199,537 items, 32 px) and runs the
# notebooks' own stage calls (`python -m fndkit timed-chain`, see fndkit.bench.chain.timed_chain): data,
# autoencoder, N-pair teacher, FND student, FND-CL student, cold start, then scores every user's
# test candidates with each model. One seed. Bounded to fit about 8 minutes of wall time:
#   EPOCHS (2) epochs per training stage, each of at most STEPS (400) steps of batch 32 (a whole
#   epoch is 3,525 steps: its time is extrapolated from the measured step rate and labelled so),
#   AE_EPOCHS (1) autoencoder epochs, COLD_REPS (3) cold-start repetitions;
#   LIMIT_S (450) stops the chain (SIGINT) if it runs longer; what it measured so far is kept.
# Writes $OUT/gpu_630.json (wall time, peak GPU memory, seconds per epoch and per step, test AUC /
# NDCG, scoring time, pinned vs pageable image transfer), $OUT/gpu_630.log, nvidia-smi.txt and the
# stages' metrics.json / history.json. With two or more GPUs it also checks
# `torchrun --nproc_per_node=2` (NCCL) on the teacher (two_gpus.log).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-2}
STEPS=${STEPS:-400}
AE_EPOCHS=${AE_EPOCHS:-1}
COLD_REPS=${COLD_REPS:-3}
LIMIT_S=${LIMIT_S:-450}
SCALE=${SCALE:-polyvore630}   # SCALE=tiny checks the script itself on a CPU in seconds
RUN_DIR=${RUN_DIR:-$(mktemp -d /tmp/fndkit-630-XXXXXX)/run}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/nvidia-smi.txt"

start=$(date +%s)
timeout -s INT "$LIMIT_S" "$PY" -m fndkit timed-chain --run-dir "$RUN_DIR" --scale "$SCALE" --seed 0 \
    --epochs "$EPOCHS" --max-steps-per-epoch "$STEPS" --autoencoder-epochs "$AE_EPOCHS" \
    --cold-repetitions "$COLD_REPS" --device auto --report "$OUT/gpu_630.json" --no-progress \
    2>&1 | tee "$OUT/gpu_630.log"
rc=${PIPESTATUS[0]}
echo "chain exit code $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu_630.log"

for stage in "$RUN_DIR"/*/; do
    name=$(basename "$stage")
    for f in metrics.json history.json; do
        [ -f "$stage/$f" ] && cp "$stage/$f" "$OUT/$name.$f"
    done
done

gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$gpus" -ge 2 ] && [ "$rc" -eq 0 ]; then
    timeout 300 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m fndkit train \
        --run-dir "$RUN_DIR" --stage student --out-name student_fnd_2gpu -p loss=fnd \
        -p epochs="$EPOCHS" -p max_steps_per_epoch="$STEPS" --no-progress > "$OUT/two_gpus.log" 2>&1
    echo "two-GPU torchrun exit code $?" | tee -a "$OUT/gpu_630.log"
    [ -f "$RUN_DIR/student_fnd_2gpu/metrics.json" ] && cp "$RUN_DIR/student_fnd_2gpu/metrics.json" "$OUT/student_fnd_2gpu.metrics.json"
fi
exit "$rc"
