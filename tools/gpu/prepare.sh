#!/usr/bin/env bash
# Builds the git-ignored .dev/ folder that one device call carries (docs/gpu-checks.md): the .NET runtime with ASP.NET
# Core (the CLI's `serve` needs it), the CLI and the microbenchmark (framework-dependent, without libtorch-cpu's natives,
# packed), the scripts, and diffusers' source. About 45 MB; with the small tree (small-tree.sh) it fits the 64 MiB carry.
# Usage: tools/gpu/prepare.sh SHARED_DIR DIFFUSERS_GIT_DIR
#   SHARED_DIR: the workplace's shared folder (device/pack-dotnet.sh, with-torch-cuda.sh, diffusers_baseline_sd35.py)
#   DIFFUSERS_GIT_DIR: a git directory of huggingface/diffusers (its HEAD's src/diffusers is packed)
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${1:?usage: prepare.sh SHARED_DIR DIFFUSERS_GIT_DIR}
diffusers_git=${2:?usage: prepare.sh SHARED_DIR DIFFUSERS_GIT_DIR}
dev=.dev
mkdir -p "$dev"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

[ -f "$dev/dotnet.tar.xz" ] || bash "$shared/device/pack-dotnet.sh" "$dev"
dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
[ -f "$dev/aspnet.tar.xz" ] || tar -cJf "$dev/aspnet.tar.xz" -C "$dotnet_root" shared/Microsoft.AspNetCore.App
cp "$shared/device/with-torch-cuda.sh" "$shared/device/diffusers_baseline_sd35.py" "$dev/"

# The GPU machine brings its own CUDA libtorch (LD_LIBRARY_PATH); satellite folders and the bundled model stay behind.
trim() {
  rm -f "$1"/libtorch*.so "$1"/libc10.so "$1"/libgomp-*.so.1 "$1"/libshm.so "$1"/libaoti_custom_ops.so \
        "$1"/libbackend_with_compiler.so "$1"/libjitbackend_test.so "$1"/libnnapi_backend.so "$1"/*.pdb "$1"/*.xml
  find "$1" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  test -f "$1/libLibTorchSharp.so"
}
dotnet publish src/DiffusersSharp.Cli -c Release -r linux-x64 --self-contained false -o "$tmp/app" > "$tmp/publish.log"
trim "$tmp/app"
tar -cJf "$dev/app.tar.xz" -C "$tmp" app
dotnet publish tools/gpu/microbench -c Release -r linux-x64 --self-contained false -o "$tmp/microbench" > "$tmp/publish.log"
trim "$tmp/microbench"
rm -f "$tmp/microbench/libSkiaSharp.so"
tar -cJf "$dev/microbench.tar.xz" -C "$tmp" microbench

git --git-dir="$diffusers_git" archive HEAD src/diffusers | tar -x -C "$tmp"
tar -cJf "$dev/diffusers-src.tar.xz" -C "$tmp/src" diffusers
rm -rf "$dev/bench" && cp -r tools/bench "$dev/bench"
cp tools/gpu/run.sh tools/gpu/cold_start.sh tools/gpu/nvml_wrap.py tools/gpu/microbench/microbench.py tools/gpu/microbench/flux.py "$dev/"
rm -rf "$dev/app" "$dev/microbench"
du -sb "$dev"
