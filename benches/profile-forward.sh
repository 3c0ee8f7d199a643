#!/usr/bin/env bash
# Where the CPU forward pass spends its time (issue 13): perf samples one perplexity pass of SmolLM2
# (benches/ppl-layerfold.mjs) and prints the hottest symbols. Commit what it shows, not the profile.
#
#   bash benches/profile-forward.sh [seq-len (512)] [windows (4)]
# Needs perf (Debian's linux-perf), a built addon (`npm run build`) and `npm run fetch-model`.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${LAYERFOLD_CACHE:-$HOME/.cache/layerfold}"
shared="${LAYERFOLD_SHARED:-$PWD/../shared}"
data="$(mktemp -d)/perf.data"
perf record -F 499 -g -o "$data" -- node benches/ppl-layerfold.mjs \
  --model "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" --data "$shared/data/text/wikitext2_raw_test.txt" \
  --seq-len "${1:-512}" --windows "${2:-4}"
perf report -i "$data" --no-children -g none --sort dso,symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
