#!/bin/bash
# Runs on the GPU machine, from the repository root, inside with-torch-cuda.sh (docs/gpu-checks.md):
#   bash .dev/with-torch-cuda.sh .dev bash .dev/run.sh "$OUT" BUDGET_S STEP...
# Runs the STEPs in order, each under its own time limit and all within BUDGET_S seconds; skipped when under 25 s are
# left. Results go to /tmp/res and are re-packed into OUT/results.tgz after every step (a device call returns at most
# 8 files, and a call cut off still returns what finished). Steps:
#   fullsize  check-full-size (transformer + VAE parity and timings)     bench     SD3.5-Medium bench, ours
#   baseline  diffusers_baseline_sd35.py                                  nvmlbase  the same, with NVML's peak (as ours)
#   offload   ours with --offload model --no-t5 (4 steps)                 not5      ours without T5 (default: full text)
#   collapse  ours without T5, counted key forced                         fp16      ours in float16 (4 steps)
#   alloc     ours with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True   offloadalloc  offload with it
#   cold      cold_start.sh: random SD3.5-M saved to local disk, then process start -> first image saved, twice
#   microbench  tools/gpu/microbench (ours) then microbench.py (diffusers), pasted side by side
#   microbench-flux  the same for FLUX.1 (microbench flux, flux.py): primitives, rotary, blocks, 57-block chain, model
#   sxs-PRESET  tools/bench/side_by_side.sh for sdxl-base, sd1.5, flux.1-schnell or flux.1-dev
set -u
out=$1; budget=$2; shift 2
start=$(date +%s)
res=/tmp/res; mkdir -p $res
export DIFFUSERS_TORCH_LIB=${LD_LIBRARY_PATH%%:*}
app=".dev/app/diffusers.dll"
fixture=tests/DiffusersSharp.Tests/Fixtures/full-size
sd35="--random-weights sd3.5-medium --device cuda --height 1024 --width 1024"
left() { echo $(( budget - ($(date +%s) - start) )); }
pack() { tar czf "$out/results.tgz" -C /tmp res; }
run_step() { # NAME LIMIT_S COMMAND
  local name=$1 limit=$2 cmd=$3 l t0 rc
  l=$(left); if [ "$l" -lt 25 ]; then echo "== $name skipped ($l s left)"; return; fi
  [ "$limit" -gt "$l" ] && limit=$l
  t0=$(date +%s); echo "== $name (limit $limit s)"
  timeout "$limit" bash -c "$cmd"; rc=$?
  echo "== $name rc=$rc in $(( $(date +%s) - t0 )) s"
  pack
}
summary() { echo "python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))[\"summary\"]))' $1"; }
nvidia-smi > $res/nvidia-smi.txt 2>&1
tar -xJf .dev/aspnet.tar.xz -C "$DOTNET_ROOT"
[ -d .dev/app ] || tar -xJf .dev/app.tar.xz -C .dev
mkdir -p /tmp/dsrc && tar -xJf .dev/diffusers-src.tar.xz -C /tmp/dsrc
ours() { # NAME LIMIT_S ARGS: `diffusers bench` with ARGS into NAME.json / NAME.log, its summary printed
  run_step "$1" "$2" "dotnet $app bench $sd35 $3 > $res/$1.json 2> $res/$1.log; r=\$?; tail -2 $res/$1.log; $(summary $res/$1.json); exit \$r"
}
for step in "$@"; do
  case $step in
    fullsize) run_step fullsize 150 "dotnet $app check-full-size --device cuda --component all --runs 10 --fixture $fixture > $res/full-size.json 2> $res/full-size.log; r=\$?; cat $res/full-size.json; tail -2 $res/full-size.log; exit \$r" ;;
    bench) ours bench-dotnet 150 "--dtype bfloat16 --steps 40 --guidance 4.5 --warmup 1 --runs 3" ;;
    baseline) run_step baseline 200 "DIFFUSERS_SRC=/tmp/dsrc PYTHONUNBUFFERED=1 python3 .dev/diffusers_baseline_sd35.py > $res/baseline.log 2>&1; r=\$?; grep '^BASELINE ' $res/baseline.log | cut -c10- > $res/bench-diffusers.json; tail -1 $res/baseline.log; exit \$r" ;;
    nvmlbase) run_step nvmlbase 200 "DIFFUSERS_SRC=/tmp/dsrc PYTHONUNBUFFERED=1 python3 .dev/nvml_wrap.py .dev/diffusers_baseline_sd35.py > $res/baseline-nvml.log 2>&1; r=\$?; grep -E '^(NVML|BASELINE) ' $res/baseline-nvml.log; exit \$r" ;;
    offload) ours bench-offload 150 "--dtype bfloat16 --steps 4 --warmup 1 --runs 1 --offload model --no-t5" ;;
    offloadalloc) run_step offloadalloc 150 "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True dotnet $app bench $sd35 --dtype bfloat16 --steps 4 --warmup 1 --runs 1 --offload model --no-t5 > $res/bench-offload-alloc.json 2> $res/bench-offload-alloc.log; r=\$?; tail -2 $res/bench-offload-alloc.log; $(summary $res/bench-offload-alloc.json); exit \$r" ;;
    not5) ours bench-not5 100 "--dtype bfloat16 --steps 40 --warmup 1 --runs 3 --no-t5" ;;
    collapse) ours bench-collapse 100 "--dtype bfloat16 --steps 40 --warmup 1 --runs 3 --no-t5 --collapse-text" ;;
    fp16) ours bench-fp16 100 "--dtype float16 --steps 4 --warmup 1 --runs 1" ;;
    alloc) run_step alloc 150 "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True dotnet $app bench $sd35 --dtype bfloat16 --steps 40 --warmup 1 --runs 3 > $res/bench-alloc.json 2> $res/bench-alloc.log; r=\$?; $(summary $res/bench-alloc.json); exit \$r" ;;
    cold) run_step cold 300 "bash .dev/cold_start.sh $app $res" ;;
    microbench) run_step microbench 120 "mkdir -p /tmp/mb && tar -xJf .dev/microbench.tar.xz -C /tmp/mb && dotnet /tmp/mb/microbench/microbench.dll cuda 20 > $res/microbench-dotnet.jsonl 2> $res/microbench-dotnet.log; r=\$?; DIFFUSERS_SRC=/tmp/dsrc python3 .dev/microbench.py cuda 20 > $res/microbench-diffusers.jsonl 2> $res/microbench-diffusers.log; paste $res/microbench-dotnet.jsonl $res/microbench-diffusers.jsonl; exit \$r" ;;
    microbench-flux) run_step microbench-flux 240 "mkdir -p /tmp/mb && tar -xJf .dev/microbench.tar.xz -C /tmp/mb && dotnet /tmp/mb/microbench/microbench.dll flux cuda 10 > $res/microbench-flux-dotnet.jsonl 2> $res/microbench-flux-dotnet.log; r=\$?; DIFFUSERS_SRC=/tmp/dsrc python3 .dev/flux.py cuda 10 > $res/microbench-flux-diffusers.jsonl 2> $res/microbench-flux-diffusers.log; paste $res/microbench-flux-dotnet.jsonl $res/microbench-flux-diffusers.jsonl; exit \$r" ;;
    sxs-*) run_step "$step" 400 "BENCH_ARGS='--warmup 1 --runs 3' BENCH_TIMEOUT=200 bash .dev/bench/side_by_side.sh $res ${step#sxs-}" ;;
    *) echo "unknown step $step" ;;
  esac
done
echo "total $(( $(date +%s) - start )) s"
