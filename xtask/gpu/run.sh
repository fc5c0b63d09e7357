#!/usr/bin/env bash
# Runs on the GPU machine from the repository root: unpacks the binaries `cargo xtask gpu`
# built, then checks and times everything in one go. Results land in $OUT.
# Usage: run.sh [doctor] [parity] [chatterbox] [s3gen-bench] [vits-bench]   (no argument: all of them)
set -u
carry="$(cd "$(dirname "$0")" && pwd)"
bin=/tmp/ferrovox-gpu && mkdir -p "$bin"
for f in "$carry"/*.xz "$carry"/chatterbox/*.xz; do
    name="$(basename "$f" .xz)"
    xz -dc "$f" > "$bin/$name" && chmod +x "$bin/$name"
done
out="${OUT:-/tmp/ferrovox-out}" && mkdir -p "$out"
export FERROVOX_VITS_FIXTURES="$carry/fixtures"
export FERROVOX_CHATTERBOX_FIXTURES="$PWD/models/chatterbox/tests/fixtures"
# Results are filed under the GPU's name, apart from the CPU machine's.
export FERROVOX_MACHINE="${FERROVOX_MACHINE:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')}"

doctor() {
    echo "== ferrovox device"; "$bin/ferrovox" device --device cuda
    echo "== ferrovox doctor"; "$bin/ferrovox" doctor --device cuda; echo "doctor exit $?"
    "$bin/ferrovox" doctor --device cuda --json > "$out/doctor.json"
}

parity() {
    echo "== VITS parity on CUDA, TF32 off (f32, tolerance 1e-4)"
    FERROVOX_TF32=0 FERROVOX_TEST_DEVICE=cuda "$bin/parity" --test-threads 1 --nocapture 2>&1 | grep -E "max abs|test result|panicked|FAILED"
    echo "== VITS parity on CUDA, TF32 on (tolerance 2e-2)"
    FERROVOX_TEST_DEVICE=cuda "$bin/parity" --test-threads 1 --nocapture 2>&1 | grep -E "max abs|test result|panicked|FAILED"
}

chatterbox() {
    echo "== Chatterbox S3Gen tests on CUDA (f32, TF32 off; the CPU bounds)"
    for t in flow_parity hift_parity s3gen_parity streaming batch; do
        FERROVOX_TEST_DEVICE=cuda "$bin/$t" --test-threads 1 --nocapture 2>&1 \
            | grep -E "max.diff|bound|distance|test result|panicked|FAILED" | sed "s/^/[$t] /"
    done
}

s3gen_bench() {
    echo "== S3Gen bench on CUDA against upstream PyTorch (same weights, same inputs)"
    local site=/tmp/ferrovox-pysite
    python3 -m pip install -q --no-deps --no-index --target "$site" "$carry"/wheels/*.whl 2>&1 | tail -2
    for tf32 in 0 1; do
        echo "-- TF32 $tf32"
        touch /tmp/ferrovox-bench-mark
        FERROVOX_TF32=$tf32 FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 PYTHONPATH="$site" \
            "$bin/xtask" bench s3gen s3gen-stream --device cuda 2>&1 | grep -v -i "warn\|deprecat"
        find bench/results -name '*.json' -newer /tmp/ferrovox-bench-mark -exec cp {} "$out/s3gen-tf32-$tf32.json" \;
    done
    if [ -x "$bin/xtask-cudnn" ]; then
        echo "-- TF32 1, cuDNN convolutions"
        FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 PYTHONPATH="$site" \
            "$bin/xtask-cudnn" bench s3gen --device cuda 2>&1 | grep -v -i "warn\|deprecat"
    fi
}

vits_bench() {
    echo "== VITS (MMS-TTS-eng configuration) on CUDA against transformers' VitsModel"
    for tf32 in 0 1; do
        echo "-- ferrovox TF32 $tf32"
        touch /tmp/ferrovox-bench-mark
        FERROVOX_TF32=$tf32 FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 \
            "$bin/xtask" bench vits-gpu --device cuda 2>&1 | grep -v -i "warn\|deprecat"
        find bench/results -name '*.json' -newer /tmp/ferrovox-bench-mark -exec cp {} "$out/vits-tf32-$tf32.json" \;
    done
    echo "-- ferrovox TF32 1, Candle's own transposed convolution (GEMM path off)"
    FERROVOX_GEMM_CONV_TRANSPOSE=0 FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 \
        "$bin/xtask" bench vits-gpu --device cuda 2>&1 | grep -v -i "warn\|deprecat"
    if [ -x "$bin/xtask-cudnn" ]; then
        echo "-- ferrovox TF32 1, cuDNN convolutions (cargo xtask gpu --cudnn)"
        FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 \
            "$bin/xtask-cudnn" bench vits-gpu --device cuda 2>&1 | grep -v -i "warn\|deprecat"
    fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(doctor parity chatterbox s3gen-bench vits-bench)
for s in "${sections[@]}"; do
    case "$s" in
        doctor) doctor ;;
        parity) parity ;;
        chatterbox) chatterbox ;;
        s3gen-bench) s3gen_bench ;;
        vits-bench) vits_bench ;;
        *) echo "unknown section $s" ;;
    esac
done
if [ -x "$carry/extra.sh" ]; then "$carry/extra.sh" "$bin" "$out"; fi
