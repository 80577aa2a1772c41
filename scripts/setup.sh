#!/usr/bin/env bash
# Install everything ksense needs on a Debian 12 machine, idempotently, and fast when it is all
# present: apt packages, the kernel-header links bcc needs, the tracefs mount, the .venv with
# pinned Python packages, and the link that makes Debian's bcc module visible in the venv.
#
#   scripts/setup.sh           system part (needs root) + venv
#   scripts/setup.sh --venv    venv only (no root needed; eBPF then unavailable)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(bpfcc-tools python3-bpfcc linux-headers-amd64 prometheus stress-ng rt-tests linux-perf
              redis-server redis-tools iperf3 openssl)
VENV=.venv
PY=${PYTHON:-python3}
log() { printf 'setup: %s\n' "$*" >&2; }

system_part() {
    if [ "$(id -u)" != 0 ]; then
        log "not root: skipping apt packages, header links and tracefs (eBPF tests will be skipped)"
        return
    fi
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # bcc compiles tracepoint programs against kernel headers found through
    # /lib/modules/$(uname -r)/{build,source}. Kernels without a matching headers package
    # (e.g. Firecracker VMs) get links to Debian's headers; existing links are left alone.
    local kdir=/lib/modules/$(uname -r)
    local arch common
    arch=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$arch" ] && [ ! -e "$kdir/build" ]; then
        mkdir -p "$kdir"; ln -sfn "$arch" "$kdir/build"; log "linked $kdir/build -> $arch"
    fi
    if [ -n "$common" ] && [ ! -e "$kdir/source" ]; then
        mkdir -p "$kdir"; ln -sfn "$common" "$kdir/source"; log "linked $kdir/source -> $common"
    fi
    if ! mountpoint -q /sys/kernel/tracing; then
        mount -t tracefs nodev /sys/kernel/tracing && log "mounted tracefs on /sys/kernel/tracing"
    fi
}

venv_part() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV"
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.requirements.sha"
    local want
    want=$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        if [ ! -x "$VENV/bin/uv" ]; then
            "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv
        fi
        log "installing Python packages (requirements/dev.txt)"
        VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/uv" pip install -q -r requirements/dev.txt
        log "installing checkov (requirements/checkov.txt) into $VENV/opt/checkov"
        "$VENV/bin/uv" venv -q --allow-existing --python "$VENV/bin/python" "$VENV/opt/checkov"
        VIRTUAL_ENV="$PWD/$VENV/opt/checkov" "$VENV/bin/uv" pip install -q -r requirements/checkov.txt
        echo "$want" > "$stamp"
    fi
}

link_bcc() {
    # Debian's bcc Python module is pure Python over libbcc: link it into the venv
    # (the PyPI package called "bcc" is unrelated and must never be installed).
    local purelib
    purelib=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if [ -d /usr/lib/python3/dist-packages/bcc ] && [ ! -e "$purelib/bcc" ]; then
        ln -sfn /usr/lib/python3/dist-packages/bcc "$purelib/bcc"
    fi
}

if [ "${1:-}" = "--venv" ]; then
    venv_part
else
    system_part &
    sys_pid=$!
    venv_part
    wait "$sys_pid"
fi
link_bcc
