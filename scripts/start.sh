#!/usr/bin/env bash
# `npm start`: set up if needed, build, then run the realistic shape on one machine:
#
#   emulator (plays Adobe: Live Stream + IMS)  <--  livestream-relay (holds the token, one
#   upstream connection)  <--  the demo page and any number of tabs (same origin as the relay)
#
# The emulator listens on a free port with IMS on (client id "demo", tokens that expire so
# the relay renews them); the relay gets its token from that IMS with the client secret from
# the environment (never a flag), and serves the page, the package and uPlot. The page reads
# the relay with a short reconnect delay, which is allowed there (the relay never answers 409).
#
#   npm start                     the relay shape (prints the page's URL)
#   npm start -- --direct         the emulator alone serves the page and the stream (no relay)
#   npm start -- --rate 200 …     other flags go to the emulator
#
# Environment: LIVESTREAM_LISTEN (the page's address, default 127.0.0.1:8787),
# LIVESTREAM_EMULATOR_IMS_SECRET (IMS client secret; a random one by default),
# LIVESTREAM_RELAY_BIN (a relay binary to use instead of building one).
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

direct=0
emulator_args=()
for a in "$@"; do
  case "$a" in
    --direct) direct=1 ;;
    *) emulator_args+=("$a") ;;
  esac
done

bash scripts/setup.sh
bash scripts/build-pkg.sh
echo "[start] building the emulator and the relay (native profile)"
if [ -f relay/Cargo.toml ]; then
  cargo build --profile native --quiet -p livestream-emulator -p livestream-relay
else
  cargo build --profile native --quiet -p livestream-emulator
fi
emulator=target/native/livestream-emulator
listen="${LIVESTREAM_LISTEN:-127.0.0.1:8787}"
static=(--www www --mount /pkg/=pkg --mount /vendor/uplot/=node_modules/uplot/dist)

relay="${LIVESTREAM_RELAY_BIN:-}"
if [ "$direct" = 0 ] && [ -z "$relay" ]; then
  if [ -f relay/Cargo.toml ]; then
    relay=target/native/livestream-relay
  else
    echo "[start] no relay/ crate in this checkout: the emulator serves the page directly"
    direct=1
  fi
fi

if [ "$direct" = 1 ]; then
  echo "[start] demo page: http://${listen}/   (direct to the emulator; Ctrl-C stops it)"
  # exec: the emulator gets Ctrl-C directly and nothing is left behind.
  exec "$emulator" --listen "$listen" "${static[@]}" "${emulator_args[@]}"
fi

secret="${LIVESTREAM_EMULATOR_IMS_SECRET:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
work=$(mktemp -d)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE has a line "… listening on http://…" and prints that URL.
listening_url() {
  local file=$1 pid=$2 what=$3
  for _ in $(seq 300); do
    local url
    url=$(grep -o 'listening on http://[^ ]*' "$file" 2>/dev/null | head -1 | sed 's/^listening on //; s#/$##') || true
    if [ -n "$url" ]; then echo "$url"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "[start] the $what exited:" >&2; cat "$file" >&2; return 1; fi
    sleep 0.1
  done
  echo "[start] the $what printed no address within 30 s" >&2
  return 1
}

# The emulator plays Adobe: Live Stream and IMS on one free port; tokens live 10 minutes, so
# the relay renews them while you watch (at 90 %).
LIVESTREAM_EMULATOR_IMS_SECRET="$secret" "$emulator" --listen 127.0.0.1:0 \
  --ims-client-id demo --token-ttl-secs 600 --quiet "${emulator_args[@]}" >"$work/emulator.out" &
pids+=($!)
emu=$(listening_url "$work/emulator.out" "${pids[0]}" emulator)
echo "[start] emulator (Live Stream + IMS): $emu"

# The relay holds the token (IMS client credentials; the secret from the environment only)
# and the one upstream connection, and serves the page, the package and uPlot.
LIVESTREAM_CLIENT_SECRET="$secret" "$relay" \
  --upstream "$emu/api/1/stream/demo" \
  --client-id demo --scope openid,AdobeID,read_organizations --ims-url "$emu" \
  --listen "$listen" "${static[@]}" > >(tee "$work/relay.out") &
pids+=($!)
page=$(listening_url "$work/relay.out" "${pids[1]}" relay)
echo "[start] demo page: $page/   (through livestream-relay; Ctrl-C stops the relay and the emulator)"
echo "[start] relay status: $page/status   metrics: $page/metrics"
echo "[start] straight to the emulator instead: npm start -- --direct"

# Ends when either process ends (or on Ctrl-C); cleanup stops the other.
set +e
wait -n "${pids[@]}"
status=$?
echo "[start] a process exited ($status); stopping"
exit "$status"
