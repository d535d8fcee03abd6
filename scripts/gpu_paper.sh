#!/usr/bin/env bash
# One seed of `make paper` at demo scale — every method's validation search, then every table and
# figure — on one GPU with K worker processes sharing it (--workers K through the study storage): wall time and the
# GPU's busy fraction (nvidia-smi's utilization.gpu sampled every SAMPLE_S seconds; the fraction of
# samples above 0 %, and the mean utilization).
#
#   OUT=/path/for/results K=4 scripts/gpu_paper.sh            # one seed on the GPU
#   OUT=/path K=4 SEEDS="1 2" ROOT=<same root> scripts/gpu_paper.sh   # later seeds, same storage
#
# ROOT keeps the run folders and the journal (the queue): a later call with the same ROOT resumes
# there. LIMIT_S kills the run (rerunning continues). CMD replaces the fndkit command (tests: a
# short one); without nvidia-smi the busy fraction is "n/a". Writes to $OUT: bench.json, paper.log,
# gpu_samples.txt, and results.md / report.html when the run finished.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PY=${PY:-python3}
K=${K:-4}
SEEDS=${SEEDS:-0}
SCALE=${SCALE:-demo}
DEVICE=${DEVICE:-cuda}
LIMIT_S=${LIMIT_S:-570}
SAMPLE_S=${SAMPLE_S:-1}
ROOT=${ROOT:-$(mktemp -d /tmp/fndkit-paper-XXXXXX)}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if [ -z "${CMD:-}" ]; then
    # shellcheck disable=SC2206  # word splitting of SEEDS is intended
    cmd=("$PY" -m fndkit paper all --seeds $SEEDS --scale "$SCALE" --device "$DEVICE" --root "$ROOT"
         --via process --workers "$K" --storage journal)
else
    eval "cmd=($CMD)"  # the shell's quoting rules: CMD is a command line
fi
: > "$OUT/gpu_samples.txt"
(
    while command -v nvidia-smi >/dev/null; do
        nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits >> "$OUT/gpu_samples.txt" 2>/dev/null
        sleep "$SAMPLE_S"
    done
) &
sampler=$!
start=$(date +%s.%N)
timeout -s KILL "$LIMIT_S" "${cmd[@]}" > "$OUT/paper.log" 2>&1
rc=$?
end=$(date +%s.%N)
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
for f in results.md report.html results.csv chosen.json; do
    found=$(find "$ROOT" -name "$f" -newer "$OUT/gpu_samples.txt" 2>/dev/null | head -1)
    [ -n "$found" ] && cp "$found" "$OUT/$f"
done
"$PY" - "$OUT" "$start" "$end" "$rc" "$K" "${cmd[*]}" <<'PY'
import json, sys
from pathlib import Path
out, wall = Path(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2])
rc, k, cmd = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
samples = [float(x) for x in (out / "gpu_samples.txt").read_text().split() if x.replace(".", "", 1).isdigit()]
record = {"command": cmd, "exit_code": rc, "wall_seconds": round(wall, 1), "workers_per_gpu": k,
          "gpu_samples": len(samples),
          "gpu_busy_fraction": round(sum(s > 0 for s in samples) / len(samples), 3) if samples else "n/a",
          "gpu_mean_utilization": round(sum(samples) / len(samples), 1) if samples else "n/a"}
(out / "bench.json").write_text(json.dumps(record, indent=1) + "\n")
print(json.dumps(record))
PY
exit "$rc"
