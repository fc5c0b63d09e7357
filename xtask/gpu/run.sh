#!/usr/bin/env bash
# Runs on the GPU machine from the repository root: unpacks the binaries `cargo xtask gpu`
# built, then checks and times everything in one go. Results land in $OUT.
set -u
carry="$(cd "$(dirname "$0")" && pwd)"
bin=/tmp/ferrovox-gpu && mkdir -p "$bin"
for f in "$carry"/*.xz; do
    name="$(basename "$f" .xz)"
    xz -dc "$f" > "$bin/$name" && chmod +x "$bin/$name"
done
out="${OUT:-/tmp/ferrovox-out}" && mkdir -p "$out"
export FERROVOX_VITS_FIXTURES="$carry/fixtures"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
echo "== ferrovox device"; "$bin/ferrovox" device --device cuda
echo "== ferrovox doctor"; "$bin/ferrovox" doctor --device cuda; echo "doctor exit $?"
"$bin/ferrovox" doctor --device cuda --json > "$out/doctor.json"
echo "== parity on CUDA, TF32 off (f32, tolerance 1e-4)"
FERROVOX_TF32=0 FERROVOX_TEST_DEVICE=cuda "$bin/parity" --test-threads 1 --nocapture 2>&1 | grep -E "max abs|test result|panicked|FAILED"
echo "== parity on CUDA, TF32 on (tolerance 2e-2)"
FERROVOX_TEST_DEVICE=cuda "$bin/parity" --test-threads 1 --nocapture 2>&1 | grep -E "max abs|test result|panicked|FAILED"
if [ -x "$carry/extra.sh" ]; then "$carry/extra.sh" "$bin" "$out"; fi
