#!/usr/bin/env bash
# One call on a machine with a GPU, at most 8 minutes: does training run on CUDA, and how fast.
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine (writes into $OUT if set)
#   DEVICE=cpu bash benchmarks/gpu_check.sh       # dry run: every part, tiny, on CPU
#
# Parts, each under its own `timeout` and all within BUDGET seconds (default 470): CUDA and
# bf16 availability; a 50-step runtime.py run on the demo set; train_speed.py at batch
# 64/256 x 64/128 px in fp32 and bf16 eager, in bf16 with cuDNN's benchmark mode and, last,
# compiled (the fraction of the bf16 peak and the issue's targets in a summary); the data
# path's rate against the step's at each batch size; a torch.profiler table of one step (and,
# last, of one compiled step by host time); host-device syncs per
# training step (torch.cuda.set_sync_debug_mode); a 1-process NCCL torchrun run (DDP
# halves); --cuda_graph's test on CUDA and its speed (with cuDNN's benchmark mode); exact
# resume on CUDA (20 steps straight against 10 + resume 10), eager and with --cuda_graph
# (after the other parts: the compiled ones get what is left). Every part's
# output is in $OUT/<part>.log, the summary in $OUT/summary.txt. First run on an H200 on
# 2026-12-04: benchmarks/README.md.
set -u
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
STARTED=$SECONDS

if [ "$DEVICE" = cuda ]; then
    STEPS=50; BATCH=64; SPEED="--batch_sizes 64 256 --image_sizes 64 128 --repeats 10"
    COMPILED_SPEED="--batch_sizes 64 256 --image_sizes 64 --repeats 10 --precisions bf16"
    PRECISIONS="fp32 bf16"; COMPILE=auto; RESUME_STEPS=20; WORKERS=8; PRECISION=bf16
    LOADER_WORKERS="0 8"; SCALE=1
else     # the dry run: the same parts, tiny
    STEPS=2; BATCH=4; SPEED="--batch_sizes 4 --image_sizes 64 --warmup 1 --repeats 1"
    COMPILED_SPEED="$SPEED --precisions fp32"; PRECISIONS=fp32; COMPILE=aot_eager; RESUME_STEPS=4; WORKERS=0
    PRECISION=fp32; LOADER_WORKERS=0
    SCALE=${SCALE:-5}   # a shared 2-core CPU takes seconds per tiny step: limits x SCALE
fi
BUDGET=${BUDGET:-$((470 * SCALE))}
RUN="python runtime.py --device $DEVICE --no_visdom --batch_size $BATCH --num_workers $WORKERS"

part() {   # part NAME SECONDS COMMAND...: run it under timeout, log to $OUT/NAME.log
    local name=$1 limit=$(($2 * SCALE)) left
    shift 2
    left=$((BUDGET - (SECONDS - STARTED)))
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    if [ "$limit" -lt 10 ]; then echo "== $name: skipped, the time budget is spent"; return; fi
    echo "== $name (at most ${limit} s): $*"
    local begun=$SECONDS
    timeout -k 5 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local code=$?
    tail -n 40 "$OUT/$name.log"
    echo "== $name: exit $code$([ $code = 124 ] && echo ' (timed out)') after $((SECONDS - begun)) s"
}

rm -rf checkpoints/gpu_check_*
part info 15 python benchmarks/gpu_check_parts.py info
part demo_set 45 python -m data.demo      # synthesised on first use (153 MB, too big to carry)
part demo_run 60 $RUN --epochs 2 --max_steps "$STEPS" --save_path gpu_check_demo
part speed 100 python benchmarks/train_speed.py --devices "$DEVICE" $SPEED \
    --precisions $PRECISIONS --loader_workers $LOADER_WORKERS --json "$OUT/speed.json"
part speed_cudnn 40 python benchmarks/train_speed.py --devices "$DEVICE" $COMPILED_SPEED \
    --cudnn_benchmark --loader_workers --json "$OUT/speed_cudnn.json"
part profile 25 python benchmarks/gpu_check_parts.py profile --device "$DEVICE" \
    --batch_size "$BATCH" --precision "$PRECISION" --out "$OUT"
part syncs 30 python benchmarks/gpu_check_parts.py syncs --device "$DEVICE" \
    --batch_size "$BATCH" --precision "$PRECISION" --steps 5
part nccl 30 python -m torch.distributed.run --standalone --nproc_per_node 1 \
    benchmarks/gpu_check_parts.py nccl --device "$DEVICE" --batch_size "$BATCH" --steps 5 \
    --precision "$PRECISION"
# --cuda_graph: the whole step recorded once (models/graphed_step.py): its CUDA test, its speed.
part graph_test 60 python -m pytest -q -p no:cacheprovider tests/test_graphed_step.py
part speed_graph 40 python benchmarks/train_speed.py --devices "$DEVICE" $COMPILED_SPEED \
    --cuda_graph --cudnn_benchmark --loader_workers --json "$OUT/speed_graph.json"
HALF=$((RESUME_STEPS / 2))
# The straight run saves inside its first epoch at step HALF; a second run resumes from
# that checkpoint in its own folder and trains to the same step: the two must agree.
RESUMED="--epochs 1 --max_steps $RESUME_STEPS --checkpoint_every_steps $HALF --seed 3"
resumed() {   # resumed NAME FLAGS...: the straight run and the resumed one, compared
    local name=$1 runs=checkpoints/gpu_check_$1
    shift
    part "$name" 75 bash -c "$RUN $RESUMED $* --save_path gpu_check_${name}_straight &&
    $RUN $RESUMED $* --save_path gpu_check_${name}_resumed --resume \$(ls ${runs}_straight/checkpoint_epoch*_step*.pt | head -n 1) &&
    python benchmarks/gpu_check_parts.py compare ${runs}_straight/latest.pt ${runs}_resumed/latest.pt"
}
resumed resume
[ "$DEVICE" = cuda ] && resumed resume_graph --cuda_graph   # --cuda_graph is refused on CPU
# Last, so that its compiling (minutes with inductor) takes only the time the others left.
part speed_compiled 150 python benchmarks/train_speed.py --devices "$DEVICE" $COMPILED_SPEED \
    --compile $COMPILE --loader_workers 0 --json "$OUT/speed_compiled.json"
# Where a compiled step's host time goes (what bounds it at batch 64), by the host's own time.
part profile_compiled 60 python benchmarks/gpu_check_parts.py profile --device "$DEVICE" \
    --batch_size "$BATCH" --precision "$PRECISION" --compile "$COMPILE" --sort host --rows 40
echo "== summary"     # outside the budget: it only reads the two tables (a second or two)
timeout 30 python benchmarks/gpu_check_parts.py summary "$OUT"/speed*.json \
    2>&1 | tee "$OUT/summary.txt"
echo "== gpu_check done in $((SECONDS - STARTED)) s; logs in $OUT"
