#!/usr/bin/env bash
# Installs what the end-to-end tests use beyond Rust: headless Chromium (the real-browser
# WebSocket test), Python's `websockets` (a third-party WebSocket client), openssl (a
# third-party TLS client) and haproxy (the PROXY protocol peer). Each is optional: a test whose tool is missing reports itself
# skipped with the reason. Safe to run again; never fails the caller.
set -u
log() { echo "install-test-deps: $*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

if [ "$(id -u)" = 0 ] && have apt-get; then
  missing=()
  have chromium || missing+=(chromium)
  have openssl || missing+=(openssl)
  have haproxy || missing+=(haproxy)
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") \
      >/tmp/sallyport-apt.log 2>&1 || log "apt-get failed (see /tmp/sallyport-apt.log); those tests will skip"
  fi
else
  log "not root or no apt-get: skipping system packages"
fi

if have python3; then
  if ! python3 -c 'import websockets' 2>/dev/null; then
    log "pip install websockets"
    python3 -m pip install -q 'websockets>=12,<16' >/tmp/sallyport-pip.log 2>&1 \
      || log "pip failed (see /tmp/sallyport-pip.log); the websockets interop test will skip"
  fi
fi
exit 0
