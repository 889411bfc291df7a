#!/bin/bash
# On the GPU machine, inside with-torch-cuda.sh (our own script):  bash .dev/bench/side_by_side.sh OUT PRESET [PRESET...]
# For each preset (sdxl-base, sd1.5, flux.1-schnell, flux.1-dev): `diffusers bench --random-weights PRESET` first (a
# fresh process), then the matching diffusers baseline, both on CUDA in bf16 with the family's defaults plus
# $BENCH_ARGS (e.g. "--warmup 1 --runs 3"), each under `timeout ${BENCH_TIMEOUT:-240}`; then their summaries side by
# side. Writes OUT/bench-dotnet-PRESET.json / .log, OUT/baseline-PRESET.log and OUT/bench-diffusers-PRESET.json.
set -u
out=$1; shift
here=$(cd "$(dirname "$0")" && pwd); dev=$(dirname "$here")
mkdir -p /tmp/dsrc && tar -xJf "$dev/diffusers-src.tar.xz" -C /tmp/dsrc && export DIFFUSERS_SRC=/tmp/dsrc
export DIFFUSERS_TORCH_LIB=${LD_LIBRARY_PATH%%:*}
rc=0
for m in "$@"; do
  case $m in sdxl-base|sd1.5) s=sdxl;; flux.1-schnell|flux.1-dev) s=flux;; *) echo "unknown preset $m"; exit 2;; esac
  echo "== $m"
  timeout "${BENCH_TIMEOUT:-240}" dotnet "$dev/app/diffusers.dll" bench --random-weights "$m" --device cuda --dtype bfloat16 ${BENCH_ARGS:-} \
    > "$out/bench-dotnet-$m.json" 2> "$out/bench-dotnet-$m.log" || { rc=1; echo "dotnet failed:"; tail -3 "$out/bench-dotnet-$m.log"; }
  timeout "${BENCH_TIMEOUT:-240}" python3 "$here/diffusers_baseline_$s.py" --model "$m" --device cuda --dtype bfloat16 ${BENCH_ARGS:-} \
    > "$out/baseline-$m.log" 2>&1 || { rc=1; echo "diffusers failed:"; tail -3 "$out/baseline-$m.log"; }
  grep "^BASELINE " "$out/baseline-$m.log" | cut -c10- > "$out/bench-diffusers-$m.json"
  head -1 "$out/baseline-$m.log"
  python3 "$here/compare.py" "$out/bench-dotnet-$m.json" "$out/bench-diffusers-$m.json"
done
exit $rc
