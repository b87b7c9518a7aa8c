#!/usr/bin/env bash
# Installs what building and testing livestream-wasm needs, on a fresh Debian machine with
# Rust (rustup), Node 20 and npm. Idempotent: each step checks first and says what it does.
# Versions are pinned: wasm-bindgen-cli = the wasm-bindgen in Cargo.lock, wasm-pack 0.15.1,
# npm packages from package-lock.json. See ../README.md#setup for why each is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_PACK_VERSION=0.15.1
say() { printf '[setup] %s\n' "$*"; }

# 1. The wasm32 target.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the Rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# 2. wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock
#    (the CLI and the library must match, or wasm-pack tries to download one and fails).
wbg_version=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
if [ -z "$wbg_version" ]; then
  say "error: no wasm-bindgen in Cargo.lock"; exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wbg_version" ]; then
  say "installing wasm-bindgen-cli $wbg_version (cargo install, a few minutes once)"
  cargo install --locked --force wasm-bindgen-cli --version "$wbg_version"
fi

# 3. wasm-pack (from crates.io: the npm package downloads a binary and fails here).
if [ "$(wasm-pack --version 2>/dev/null | awk '{print $2}')" != "$WASM_PACK_VERSION" ]; then
  say "installing wasm-pack $WASM_PACK_VERSION (cargo install, ~2 minutes once)"
  cargo install --locked --force wasm-pack --version "$WASM_PACK_VERSION"
fi

# 4. Chromium from Debian, for the browser tests and the demo-page test (playwright-core), and
#    a small CJK font so that screenshots of Japanese page names show text, not boxes;
#    redis-server for the relay's fleet-mode tests (they start it on a free loopback port).
apt_packages=(chromium fonts-wqy-microhei redis-server)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]} (apt-get)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's binaryen ships a wasm-opt that writes broken modules; we use the npm one.
if [ -x /usr/bin/wasm-opt ] && /usr/bin/wasm-opt --version 2>/dev/null | grep -q 'version 108'; then
  say "warning: /usr/bin/wasm-opt is Debian's binaryen 108, which breaks modules; it is not used"
fi

# 5. npm packages, exactly as in package-lock.json (reinstalled when the lock changes).
stamp=node_modules/.package-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  say "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
say "ready"
