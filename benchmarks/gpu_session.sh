#!/bin/bash
# One lent GPU's session, in one `device` call (issue #22 point 9, issue #23 point 7):
#   1. benchmarks/gpu_bench.py: sampling throughput and a 200-job Celery burst on the GPU;
#   2. three training runs side by side on the same GPU, each bounded by the time left:
#      a: the shipped network (hidden 192) trained further from the shipped weights, larger batches;
#      b: hidden 256 and c: hidden 384, from scratch (what a larger network buys in the same time).
# Writes under $OUT (at most 8 files come back): session.log, gpu_bench.json, train_{a,b,c}.log,
# melody_{a,b,c}.pt (float16, as shipped). Scored here afterwards with the CPU protocols.
#
# The device image has torch but not the bot's other packages, redis-server or the songs; they
# travel with the call (all three ignored by git):
#   .whl/         wheels for Python 3.12 (README of the device tool: pip download --no-deps ...)
#   .redis/       redis-server and its libraries, with a wrapper named redis-server
#   data/pop909/  a copy of ../shared/data/pop909
# Run from the repository root:  bash benchmarks/gpu_session.sh [seconds for the whole script]
# A dry run here first:  PATH=$PWD/.venv/bin:$PATH DEVICE=cpu BENCH="--tiny --device cpu" SONGS=/tmp/few \
#     bash benchmarks/gpu_session.sh 150   (SONGS: a few song folders, ids ending in 0 among them)
set -u
began=$(date +%s)
budget=${1:-450}
DEVICE=${DEVICE:-cuda} BENCH=${BENCH:-} SONGS=${SONGS:-data/pop909}
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
log="$OUT/session.log"
say() { echo "[$(($(date +%s) - began)) s] $*" | tee -a "$log"; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$log" 2>&1 || { say "wheels did not install"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PATH="$PWD/.redis:$PATH" PYTHONUNBUFFERED=1 MELODYBOT_CACHE=/tmp/melodybot-cache
export TQDM_MININTERVAL=20  # a progress line every 20 s in the logs, not ten a second
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv >>"$log" 2>&1
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())" >>"$log" 2>&1
redis-server --version >>"$log" 2>&1 || say "redis-server does not run"

# The songs are parsed once (about a minute of one core) beside the benchmark; the runs read the cache.
python3 -c "from model.lab.data import load_songs; print(len(load_songs('$SONGS')[0]), 'songs parsed')" \
    >>"$log" 2>&1 &
parsing=$!
say "gpu_bench"
timeout 170 python3 benchmarks/gpu_bench.py $BENCH --out "$OUT/gpu_bench.json" >>"$log" 2>&1
say "gpu_bench exited $?"
wait $parsing

# Each run gets what is left, less 45 s for its last scoring, the export and the transfer.
minutes=$(python3 -c "print(max(0.5, ($budget - ($(date +%s) - $began) - 45) / 60))")
say "training for $minutes minutes each"
common=("$SONGS" --steps 1000000 --eval-every 1000000 --save-every 1000000 --batch-size 64 --target-steps 960
        --minutes "$minutes" --threads 4 --device "$DEVICE")
python3 -m model.lab.train "${common[@]}" --out /tmp/runs/a --init model/weights/melody.pt --hidden 192 \
    --lr 5e-4 --warmup 100 --seed 7 --export "$OUT/melody_a.pt" >"$OUT/train_a.log" 2>&1 &
python3 -m model.lab.train "${common[@]}" --out /tmp/runs/b --hidden 256 --dropout 0.25 \
    --lr 1.5e-3 --warmup 300 --seed 8 --export "$OUT/melody_b.pt" >"$OUT/train_b.log" 2>&1 &
python3 -m model.lab.train "${common[@]}" --out /tmp/runs/c --hidden 384 --dropout 0.3 \
    --lr 1.2e-3 --warmup 300 --seed 9 --export "$OUT/melody_c.pt" >"$OUT/train_c.log" 2>&1 &
sleep 60
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >>"$log" 2>&1
wait
say "training done"
for run in a b c; do
    echo "== $run" >>"$log"
    tr '\r' '\n' <"$OUT/train_$run.log" | grep -E '^\{"nll"|time budget|parameters|Error|error' | tail -4 >>"$log"
done
ls -la "$OUT" >>"$log"
cat "$log"
