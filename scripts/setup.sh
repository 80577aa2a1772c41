#!/usr/bin/env bash
# Install everything ksense needs on Debian 12 or Ubuntu 22.04/24.04, idempotently, and fast
# when it is all present: system packages, the kernel-header links bcc needs, the tracefs mount,
# the .venv with pinned Python packages, and the link that makes the distribution's bcc module
# visible in the venv. Before installing anything it says in one line what it will install.
#
#   scripts/setup.sh           system part (needs root) + venv
#   scripts/setup.sh --venv    venv only (no root needed; eBPF then unavailable)
#   scripts/setup.sh --plan    print that one line and change nothing
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
KERNEL=$(uname -r)
MODE=${1:-all}
log() { printf 'setup: %s\n' "$*" >&2; }

# Wanted system packages. An item "a|b|c" is satisfied when any of them is installed, and
# installs the first one the distribution offers: kernel headers for the running kernel where
# they are packaged (Ubuntu, stock Debian kernels), else the distribution's generic headers
# (Debian's linux-headers-<arch>, Ubuntu's linux-headers-generic), which scripts/setup.sh links
# under /lib/modules; perf is linux-perf on Debian and linux-tools-* on Ubuntu. podman, buildah,
# runc and debootstrap build and run the images (`make images`, tests/deploy/test_images.py).
wanted_items() {
    local arch
    arch=$(dpkg --print-architecture)
    printf '%s\n' bpfcc-tools python3-bpfcc \
        "linux-headers-$KERNEL|linux-headers-$arch|linux-headers-generic" \
        prometheus openssl stress-ng rt-tests "linux-perf|linux-tools-$KERNEL|linux-tools-generic" \
        redis-server redis-tools iperf3 \
        podman buildah runc debootstrap victoria-metrics
}

# The interpreter for the venv: $PYTHON, else the first python3 / python3.12 / python3.11 that is
# at least 3.11 (Debian 12: 3.11, Ubuntu 24.04: 3.12), else python3.11 to install (Ubuntu 22.04).
python_for_venv() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    local p
    for p in python3 python3.12 python3.11; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
        then echo "$p"; return; fi
    done
    echo python3.11
}
# Only a venv still to be created needs it (and asking a pyenv shim costs a few tenths of a second).
PY=""
if [ ! -x "$VENV/bin/python" ]; then PY=$(python_for_venv); fi

# Packages the venv itself needs: the interpreter when it is missing, and its venv module
# (Debian and Ubuntu ship ensurepip separately, as python3-venv / python3.X-venv).
python_items() {
    if [ -x "$VENV/bin/python" ]; then return; fi
    if ! command -v "$PY" >/dev/null 2>&1; then
        printf '%s\n' "$PY" "$PY-venv"
    elif ! "$PY" -c 'import ensurepip' 2>/dev/null; then
        if [ "$PY" = python3 ]; then echo python3-venv; else echo "$PY-venv|python3-venv"; fi
    fi
}

headers_present() { [ -e "/lib/modules/$KERNEL/build" ]; }

# Items none of whose packages is installed (one dpkg-query call for all of them).
missing_items() {
    local items=("$@") names=() installed item alt found
    for item in "${items[@]}"; do IFS='|' read -ra alts <<< "$item"; names+=("${alts[@]}"); done
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${names[@]}" 2>/dev/null \
                | awk '$NF == "installed" && $(NF-1) == "ok" {print $1}' || true)
    for item in "${items[@]}"; do
        if [[ $item == linux-headers-* ]] && headers_present; then continue; fi
        found=0
        IFS='|' read -ra alts <<< "$item"
        for alt in "${alts[@]}"; do
            if grep -qxF -- "$alt" <<< "$installed"; then found=1; break; fi
        done
        [ "$found" = 1 ] || echo "$item"
    done
}

# The first package of an item the configured apt sources offer, or nothing.
candidate() {
    local alt
    IFS='|' read -ra alts <<< "$1"
    for alt in "${alts[@]}"; do
        if apt-cache policy "$alt" 2>/dev/null | grep -q 'Candidate: [^(]'; then echo "$alt"; return; fi
    done
}

venv_stale() {
    if [ ! -x "$VENV/bin/python" ]; then return 0; fi
    [ "$(cat "$VENV/.requirements.sha" 2>/dev/null)" != "$(requirements_sha)" ]
}
requirements_sha() { cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1; }

link_headers() {
    # bcc compiles against /lib/modules/$(uname -r)/{build,source}. Kernels without a matching
    # headers package (e.g. Firecracker VMs) get links to the installed generic headers:
    # Debian's linux-headers-<ver>-<arch> and -common, Ubuntu's linux-headers-<ver>-generic and
    # linux-headers-<ver>. Existing links are left alone.
    local kdir=/lib/modules/$KERNEL arch build common
    arch=$(dpkg --print-architecture)
    build=$(ls -d /usr/src/linux-headers-*-"$arch" /usr/src/linux-headers-*-generic 2>/dev/null | sort -V | tail -n 1 || true)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$common" ] && [ -n "$build" ] && [ -d "${build%-generic}" ] && [ "${build%-generic}" != "$build" ]; then
        common=${build%-generic}
    fi
    if [ -n "$build" ] && [ ! -e "$kdir/build" ]; then
        mkdir -p "$kdir"; ln -sfn "$build" "$kdir/build"; log "linked $kdir/build -> $build"
    fi
    if [ -n "$common" ] && [ ! -e "$kdir/source" ]; then
        mkdir -p "$kdir"; ln -sfn "$common" "$kdir/source"; log "linked $kdir/source -> $common"
    fi
}

system_part() {
    local packages=("$@")
    if [ ${#packages[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    fi
    link_headers
    if ! mountpoint -q /sys/kernel/tracing; then
        mount -t tracefs nodev /sys/kernel/tracing && log "mounted tracefs on /sys/kernel/tracing"
    fi
}

venv_part() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    if venv_stale; then
        if [ ! -x "$VENV/bin/uv" ]; then
            "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv
        fi
        VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/uv" pip install -q -r requirements/dev.txt
        log "installing checkov (requirements/checkov.txt) into $VENV/opt/checkov"
        "$VENV/bin/uv" venv -q --allow-existing --python "$VENV/bin/python" "$VENV/opt/checkov"
        VIRTUAL_ENV="$PWD/$VENV/opt/checkov" "$VENV/bin/uv" pip install -q -r requirements/checkov.txt
        requirements_sha > "$VENV/.requirements.sha"
    fi
}

link_bcc() {
    # The distribution's bcc module is pure Python over libbcc: link it into the venv (the PyPI
    # package called "bcc" is unrelated and must never be installed).
    local purelib
    purelib=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if [ -d /usr/lib/python3/dist-packages/bcc ] && [ ! -e "$purelib/bcc" ]; then
        ln -sfn /usr/lib/python3/dist-packages/bcc "$purelib/bcc"
    fi
}

# --- plan: what is missing, resolved to package names ---------------------------------------
system=0
if [ "$MODE" = --plan ]; then
    system=1
elif [ "$MODE" != --venv ]; then
    if [ "$(id -u)" = 0 ]; then
        system=1
    else
        log "not root: skipping system packages, header links and tracefs (eBPF tests will be skipped)"
    fi
fi
packages=()
unavailable=()
if [ "$system" = 1 ]; then
    command -v dpkg-query >/dev/null 2>&1 || { log "needs an apt-based system (Debian, Ubuntu)"; exit 1; }
    mapfile -t items < <(wanted_items; python_items)
    mapfile -t missing < <(missing_items "${items[@]}")
    if [ ${#missing[@]} -gt 0 ] && [ "$MODE" != --plan ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
    fi
    for item in "${missing[@]}"; do
        pkg=$(candidate "$item")
        if [ -n "$pkg" ]; then packages+=("$pkg"); else unavailable+=("$item"); fi
    done
fi
plan=""
if [ ${#packages[@]} -gt 0 ]; then plan="apt: ${packages[*]}"; fi
if venv_stale; then plan="${plan:+$plan; }python: requirements/dev.txt into $VENV${PY:+ (new, $PY)}"; fi
if [ -n "$plan" ]; then log "will install $plan"; fi
if [ ${#unavailable[@]} -gt 0 ]; then log "not offered by the apt sources, skipped: ${unavailable[*]}"; fi
if [ "$MODE" = --plan ]; then exit 0; fi

# --- do it: apt and pip in parallel, unless the venv needs an interpreter apt brings --------
if [ "$MODE" = --venv ] || [ "$system" = 0 ]; then
    venv_part
elif [ -z "$PY" ] || command -v "$PY" >/dev/null 2>&1; then
    system_part "${packages[@]}" &
    sys_pid=$!
    venv_part
    wait "$sys_pid"
else
    system_part "${packages[@]}"
    venv_part
fi
link_bcc
