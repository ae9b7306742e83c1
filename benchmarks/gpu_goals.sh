#!/usr/bin/env bash
# The extraction goals of docs/extraction.md on one GPU, in one command: LLaVA-1.5-7B and
# Qwen2-VL-2B layouts with random weights at full size (the real FLOPs; nothing is downloaded),
# with DataTailor + perplexity features, then every DataTailor, COINCIDE, PRISM and perplexity
# feature in one pass. Each line of output is one JSON result (MFU against the matmul probe and
# the datasheet, the stage that bounds the run); they are also written under OUT (default
# gpu-goals/). About 10 minutes on an H200, estimated from the throughput in docs/extraction.md.
#
#     bash benchmarks/gpu_goals.sh [OUT]
#
# A smoke run of the same script on the CPU with the tiny models:
#     GPU_GOALS_DEVICE=cpu GPU_GOALS_N=16 GPU_GOALS_LLAVA=tiny-llava GPU_GOALS_QWEN=tiny-qwen2-vl \
#         bash benchmarks/gpu_goals.sh /tmp/gpu-goals-smoke
set -euo pipefail
out=${1:-gpu-goals}
n=${GPU_GOALS_N:-1024}
device=${GPU_GOALS_DEVICE:-cuda}
llava=${GPU_GOALS_LLAVA:-llava-1.5-7b-like}
qwen=${GPU_GOALS_QWEN:-qwen2-vl-2b-like}
mkdir -p "$out"
datatailor_perplexity=spectrum,last_token,answer_nll
all_four=spectrum,last_token,coincide,visual_mean,answer_nll
python benchmarks/extract.py --arch "$llava" --device "$device" --n "$n" --batch-size 16,32 \
    --features "$datatailor_perplexity" --features "$all_four" --json | tee "$out/llava-1.5-7b.jsonl"
python benchmarks/extract.py --arch "$qwen" --device "$device" --n "$n" --batch-size 16,64 \
    --features "$datatailor_perplexity" --features "$all_four" --json | tee "$out/qwen2-vl-2b.jsonl"
