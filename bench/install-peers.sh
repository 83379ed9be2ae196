#!/bin/sh
# Installs the peer tunnels `sallyport-bench` compares against, as far as this host allows:
#   haproxy and socat from the distribution (apt-get), rathole from crates.io (cargo install).
# Prints one line per peer: installed, already present, or why it could not be installed.
# Exit status: 0 when every peer is on PATH afterwards, 1 otherwise. Safe to run twice.
set -u

missing=""

have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        return 1
    fi
}

apt_peers=""
for p in haproxy socat; do
    if have "$p"; then
        echo "$p: already installed ($(command -v "$p"))"
    else
        apt_peers="$apt_peers $p"
    fi
done

if [ -n "$apt_peers" ]; then
    if ! have apt-get; then
        echo "apt-get not found: install$apt_peers with your package manager"
    elif ! as_root apt-get update -qq; then
        echo "apt-get update failed (not root and no sudo?)"
    else
        # shellcheck disable=SC2086 # word splitting of the list is intended
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq $apt_peers >/dev/null ||
            echo "apt-get install$apt_peers failed"
    fi
    for p in $apt_peers; do
        if have "$p"; then echo "$p: installed ($(command -v "$p"))"; fi
    done
fi

if have rathole; then
    echo "rathole: already installed ($(command -v rathole))"
elif ! have cargo; then
    echo "rathole: cargo not found (install a Rust toolchain, then: cargo install rathole --locked)"
else
    # Plain TCP is all the benchmark uses: leave out TLS (needs OpenSSL headers), noise, websocket.
    # rathole 0.5.0's lock file pins `time` 0.3.29, which newer compilers reject (E0282); when
    # the locked build fails, retry letting cargo pick semver-compatible fixes.
    features="--no-default-features --features server,client"
    # shellcheck disable=SC2086 # word splitting of $features is intended
    if cargo install rathole --locked $features ||
        { echo "rathole: locked build failed; retrying without --locked"; cargo install rathole $features; }; then
        echo "rathole: installed ($(command -v rathole || echo "$HOME/.cargo/bin/rathole: add it to PATH"))"
    else
        echo "rathole: cargo install failed"
    fi
fi

for p in haproxy socat rathole; do
    have "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "not installed:$missing (sallyport-bench skips these paths)"
    exit 1
fi
echo "all peers installed"
