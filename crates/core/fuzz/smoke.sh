#!/usr/bin/env bash
# A short run of every fuzz target, as CI does it: builds them with nightly cargo-fuzz (installed
# if missing), makes the seed corpora from ../shared, then runs each target over its seeds, the
# regression inputs in crates/core/tests/fuzz/<target>, and fresh mutations for a few seconds.
#   bash crates/core/fuzz/smoke.sh [seconds per target, default 20]
# Long runs: see README.md.
set -euo pipefail
cd "$(dirname "$0")"
per_target="${1:-20}"
cargo +nightly --version >/dev/null 2>&1 || { echo "fuzz: a nightly toolchain is required (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
python3 make_seeds.py
cargo +nightly fuzz build --release
for target in safetensors safetensors_index gguf config text; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${per_target} s"
  cargo +nightly fuzz run --release "$target" "corpus/$target" "../tests/fuzz/$target" -- \
    -max_total_time="$per_target" -rss_limit_mb=4096 -print_final_stats=1 2>&1 | grep -E "^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY)" || true
  # libFuzzer exits non-zero on a finding; `pipefail` would have stopped us, so check for artifacts.
  if compgen -G "artifacts/$target/*" >/dev/null; then
    echo "fuzz: $target found a crash: see crates/core/fuzz/artifacts/$target" >&2
    exit 1
  fi
done
