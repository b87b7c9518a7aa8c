#!/usr/bin/env bash
# Fuzzes the core: every target of the livestream-fuzz crate for N seconds each, with the
# seeded random driver (no extra tool needed; see fuzz/src/lib.rs).
#
#   bash scripts/fuzz.sh [--seconds N] [--seed S] [--target NAME]...
#
# --seconds  per target (default 60); --seed  repeat a run exactly (default: from the clock,
# printed); --target  only these targets (default: all). A failing input is written to
# fuzz/artifacts/<target>/ with the command that replays it; the script then exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
seed=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a value}"; shift 2 ;;
    --seed) seed="${2:?--seed needs a value}"; shift 2 ;;
    --target) targets+=("${2:?--target needs a value}"); shift 2 ;;
    *) echo "fuzz.sh: unknown argument '$1' (use --seconds N, --seed S, --target NAME)" >&2; exit 2 ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(framer record)
  # The client target exists once the client API it drives is on this branch.
  if [ -f fuzz/src/bin/fuzz_client.rs ]; then targets+=(client); fi
fi

cargo build --quiet --profile fuzz -p livestream-fuzz --bins
status=0
for t in "${targets[@]}"; do
  args=(--seconds "$seconds")
  if [ -n "$seed" ]; then args+=(--seed "$seed"); fi
  cargo run --quiet --profile fuzz -p livestream-fuzz --bin "fuzz_$t" -- "${args[@]}" || status=1
done
exit $status
