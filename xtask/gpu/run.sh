#!/usr/bin/env bash
# Runs on the GPU machine from the repository root: unpacks the binaries `cargo xtask gpu`
# built, then checks and times everything in one go. Results land in $OUT.
# Usage: run.sh [doctor] [parity] [chatterbox] [s3gen-bench] [chatterbox-bench] [streams-bench] [clone-bench] [vits-bench] [vits-planner]
#               [vits-profile]   (no argument: all but vits-profile)
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
    echo "== ferrovox's CUDA conv kernel against Candle's convolutions (TF32 off: 2e-5, on: 5e-3, relative)"
    "$bin/cuda_conv" --test-threads 1 --nocapture 2>&1 | grep -E "relative error|test result|panicked|FAILED"
    echo "== CUDA graphs: replays against eager runs, fallbacks"
    "$bin/cuda_graph" --test-threads 1 --nocapture 2>&1 | grep -E "call|fallback|test |test result|panicked|FAILED"
    echo "== VITS parity on CUDA, TF32 off (f32, tolerance 1e-4)"
    FERROVOX_TF32=0 FERROVOX_TEST_DEVICE=cuda "$bin/parity" --test-threads 1 --nocapture 2>&1 | grep -E "max abs|test result|panicked|FAILED|unwrap|Err|graphs per stage"
    echo "== VITS parity on CUDA, TF32 on (tolerance 2e-2)"
    FERROVOX_TEST_DEVICE=cuda "$bin/parity" --test-threads 1 --nocapture 2>&1 | grep -E "max abs|test result|panicked|FAILED|unwrap|Err|graphs per stage"
}

chatterbox() {
    echo "== Chatterbox S3Gen tests on CUDA (f32, TF32 off; the CPU bounds)"
    for t in flow_parity hift_parity s3gen_parity streaming batch; do
        FERROVOX_TEST_DEVICE=cuda "$bin/$t" --test-threads 1 --nocapture 2>&1 \
            | grep -E "max.diff|bound|distance|test result|panicked|FAILED" | sed "s/^/[$t] /"
    done
}

# Upstream chatterbox-tts and the imports the GPU machine's Python lacks, from the carried wheels.
site=/tmp/ferrovox-pysite
upstream_site() {
    python3 -m pip install -q --no-deps --no-index --target "$site" "$carry"/wheels/*.whl 2>&1 | tail -2
}

# `xtask bench CASES...` under TF32 off, then on, against upstream in the same run; each
# run's JSON lands in $out as TAG-tf32-N.json.
bench_tf32() {
    local tag="$1"; shift
    for tf32 in 0 1; do
        echo "-- TF32 $tf32"
        touch /tmp/ferrovox-bench-mark
        FERROVOX_TF32=$tf32 FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 PYTHONPATH="$site" \
            "$bin/xtask" bench "$@" --device cuda 2>&1 | grep -v -i "warn\|deprecat\|Sampling"
        find bench/results -name '*.json' -newer /tmp/ferrovox-bench-mark -exec cp {} "$out/$tag-tf32-$tf32.json" \;
    done
}

s3gen_bench() {
    echo "== S3Gen bench on CUDA against upstream PyTorch (same weights, same inputs)"
    upstream_site
    bench_tf32 s3gen s3gen s3gen-stream
    if [ -x "$bin/xtask-cudnn" ]; then
        echo "-- TF32 1, cuDNN convolutions"
        FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 PYTHONPATH="$site" \
            "$bin/xtask-cudnn" bench s3gen --device cuda 2>&1 | grep -v -i "warn\|deprecat"
    fi
}

chatterbox_bench() {
    echo "== Chatterbox T3 + S3Gen on CUDA against upstream PyTorch (same weights, same inputs)"
    upstream_site
    echo "== Chatterbox tests on CUDA (f32, TF32 off; the CPU bounds)"
    for t in t3_parity tts_e2e tokenizer_parity ve_parity s3tokenizer_parity campplus_parity cloning_parity; do
        FERROVOX_TF32=0 FERROVOX_TEST_DEVICE=cuda "$bin/$t" --test-threads 1 --nocapture 2>&1 \
            | grep -E "max.diff|bound|identical|distance|test result|panicked|FAILED" | sed "s/^/[$t] /"
    done
    bench_tf32 chatterbox chatterbox
}

streams_bench() {
    echo "== Continuous batching on CUDA: T3 tokens of generations decoded in a batch against alone (f32, TF32 off)"
    FERROVOX_TF32=0 FERROVOX_TEST_DEVICE=cuda "$bin/t3_batch" --test-threads 1 --nocapture 2>&1 \
        | grep -E "slots|test result|panicked|FAILED" | sed "s/^/[t3_batch] /"
    echo "== Chatterbox, concurrent requests through one decode batch (TF32 on)"
    upstream_site
    touch /tmp/ferrovox-bench-mark
    FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 PYTHONPATH="$site" \
        "$bin/xtask" bench chatterbox-streams --device cuda 2>&1 | grep -v -i "warn\|deprecat"
    find bench/results -name '*.json' -newer /tmp/ferrovox-bench-mark -exec cp {} "$out/streams.json" \;
}

clone_bench() {
    echo "== Cloning a 10 s clip on CUDA against upstream's prepare_conditionals (same weights, same clip)"
    upstream_site
    bench_tf32 clone clone
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
    # ferrovox's own variants against the default above: PyTorch is not run again.
    variant() {
        local tag="$1" what="$2"; shift 2
        echo "-- ferrovox TF32 1, $what"
        touch /tmp/ferrovox-bench-mark
        env "$@" FERROVOX_BENCH_TORCH=0 FERROVOX_REPO="$PWD" \
            "$bin/xtask" bench vits-gpu --device cuda 2>&1 | grep -v -i "warn\|deprecat"
        find bench/results -name '*.json' -newer /tmp/ferrovox-bench-mark -exec cp {} "$out/vits-$tag.json" \;
    }
    variant pipeline-registers "the conv reading the next input stage into registers (weights when needed)" FERROVOX_CUDA_CONV_PIPELINE=registers
    variant pipeline-sync "the conv reading each stage when it is needed" FERROVOX_CUDA_CONV_PIPELINE=sync
    variant small-grids "the tensor-core conv also on grids too small for it" FERROVOX_CUDA_CONV_MIN_BLOCKS=0
    variant cuda-conv-off "the tensor-core conv off (Candle's ops and the GEMM paths)" FERROVOX_CUDA_CONV=0
    if [ -x "$bin/xtask-cudnn" ]; then
        echo "-- ferrovox TF32 1, cuDNN convolutions (cargo xtask gpu --cudnn)"
        FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 \
            "$bin/xtask-cudnn" bench vits-gpu --device cuda 2>&1 | grep -v -i "warn\|deprecat"
    fi
}

vits_planner() {
    echo "== ferrovox TF32 1: throughput by batch against the planner's choice"
    touch /tmp/ferrovox-bench-mark
    FERROVOX_REPO="$PWD" "$bin/xtask" bench vits-gpu-planner --device cuda 2>&1 | grep -v -i "warn\|deprecat"
    find bench/results -name '*.json' -newer /tmp/ferrovox-bench-mark -exec cp {} "$out/vits-planner.json" \;
}

vits_profile() {
    local batch="${FERROVOX_PROFILE_BATCH:-16}"
    echo "== VITS at batch $batch under ncu: GPU time per kernel of one load, warm-up and call"
    FERROVOX_BENCH_PROFILE_BATCH="$batch" FERROVOX_REPO="$PWD" FERROVOX_BENCH_PYTHON=python3 \
        ncu --clock-control none --target-processes application-only \
            --metrics gpu__time_duration.sum --csv --page raw \
            "$bin/xtask" bench vits-gpu --device cuda > "$out/vits-profile.csv" 2> "$out/vits-profile.err"
    echo "ncu exit $?"
    python3 - "$out/vits-profile.csv" <<'PY'
import csv, collections, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
head = rows[0]
name, time = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
total, count = collections.Counter(), collections.Counter()
for r in rows[2:]:
    try:
        t = float(r[time].replace(",", ""))
    except ValueError:
        continue
    k = r[name][:90]
    total[k] += t
    count[k] += 1
all_ns = sum(total.values())
print(f"{sum(count.values())} kernels, {all_ns / 1e6:.1f} ms of GPU time")
for k, t in total.most_common(25):
    print(f"{t / 1e6:9.2f} ms {100 * t / all_ns:5.1f}% {count[k]:6d}x  {k}")
PY
}

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(doctor parity chatterbox s3gen-bench chatterbox-bench streams-bench clone-bench vits-bench vits-planner)
for s in "${sections[@]}"; do
    case "$s" in
        doctor) doctor ;;
        parity) parity ;;
        chatterbox) chatterbox ;;
        s3gen-bench) s3gen_bench ;;
        chatterbox-bench) chatterbox_bench ;;
        streams-bench) streams_bench ;;
        clone-bench) clone_bench ;;
        vits-bench) vits_bench ;;
        vits-planner) vits_planner ;;
        vits-profile) vits_profile ;;
        *) echo "unknown section $s" ;;
    esac
done
if [ -x "$carry/extra.sh" ]; then "$carry/extra.sh" "$bin" "$out"; fi
