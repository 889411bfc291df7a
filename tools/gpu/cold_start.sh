#!/bin/bash
# Cold start from local disk, as diffusers' reference measures it (docs/gpu-checks.md): SD3.5-Medium's
# transformer + VAE with random weights saved to local disk in bf16, no text encoders; then, twice, a fresh process
# that loads them and saves one 1024x1024 image (1 step, given prompt embeddings). Prints and writes cold-start.json:
# seconds from process start to the image saved and to process exit.
# Usage (on the GPU machine, from run.sh): cold_start.sh APP_DLL RESULTS_DIR
# COLD_PRESET / COLD_DEVICE / COLD_DTYPE / COLD_SIZE / COLD_T5_TOKENS override the model (a preset or a config folder),
# cuda, bfloat16, 1024 and 256 (a dry run on the CPU with the tiny model's configs, say).
set -u
app=$1; res=$2
preset=${COLD_PRESET:-sd3.5-medium}; device=${COLD_DEVICE:-cuda}; dtype=${COLD_DTYPE:-bfloat16}; size=${COLD_SIZE:-1024}
tokens=${COLD_T5_TOKENS:-256}
folder=/tmp/sd35-random
rm -rf "$folder"
dotnet "$app" bench --random-weights "$preset" --device "$device" --dtype "$dtype" --max-sequence-length "$tokens" --save-model "$folder" > "$res/cold-save.json" 2> "$res/cold-save.log" || exit 1
runs=()
for i in 1 2; do
  image=/tmp/cold$i.png; rm -f "$image"
  start=$(date +%s.%N)
  dotnet "$app" generate --model "$folder" --prompt-embeds "$folder/random_prompt_embeds.safetensors" --device "$device" \
    --dtype "$dtype" --steps 1 --height "$size" --width "$size" --seed 0 --output "$image" > "$res/cold-gen$i.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  saved=$(stat -c %.9Y "$image" 2>/dev/null || echo "float('nan')")
  runs+=("{\"run\": $i, \"rc\": $rc, \"image_saved_s\": $(python3 -c "print(round($saved - $start, 3))"), \"exit_s\": $(python3 -c "print(round($end - $start, 3))")}")
done
(IFS=,; echo "{\"saved\": $(cat "$res/cold-save.json" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))'), \"runs\": [${runs[*]}]}") > "$res/cold-start.json"
cat "$res/cold-start.json"
