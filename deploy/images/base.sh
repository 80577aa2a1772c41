#!/usr/bin/env bash
# A local Python base image from Debian's packages, for machines that reach Debian's mirror but
# no container registry: debootstrap --variant=minbase bookworm + Python 3.11, imported into the
# local image store as localhost/ksense-base:bookworm-<hash of this script>. Cached: the image
# (in the engine's store) and its tarball (~/.cache/ksense/images, or $KSENSE_IMAGE_CACHE) are
# reused while this script is unchanged. Prints the image reference on stdout.
#
#   deploy/images/base.sh            build or reuse, print the reference
# Needs root (debootstrap) and podman; the mirror is the machine's first Debian source, else
# $KSENSE_DEBIAN_MIRROR, else http://deb.debian.org/debian.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
SUITE=bookworm
# What the Dockerfiles expect of a base: python3 (Debian's 3.11, the one bcc is built for), its
# venv module, and the CA bundle.
PACKAGES=python3,python3-venv,ca-certificates
hash=$(sha256sum "$0" | cut -c1-12)
ref=localhost/ksense-base:$SUITE-$hash
cache=${KSENSE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ksense/images}
tarball=$cache/ksense-base-$SUITE-$hash.tar
log() { printf 'base: %s\n' "$*" >&2; }

if podman image exists "$ref"; then echo "$ref"; exit 0; fi
if [ ! -s "$tarball" ]; then
    mirror=${KSENSE_DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}
    mirror=${mirror:-http://deb.debian.org/debian}
    root=$(mktemp -d /var/tmp/ksense-base.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    log "debootstrap $SUITE from $mirror (about a minute)"
    started=$(date +%s)
    mkdir -p "$cache"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" > "$cache/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/debootstrap.log" >&2; log "debootstrap failed (log: $cache/debootstrap.log)"; exit 1
    fi
    # Slim as Debian's own -slim images: no documentation or translations now or in later installs.
    cat > "$root/etc/dpkg/dpkg.cfg.d/excludes" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
    # ... and no package caches left in a layer (what Debian's images set in docker-clean).
    cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    rm -rf "$root"/usr/share/{man,info,locale,lintian}/* "$root"/var/cache/apt/*.bin \
           "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* \
           "$root"/etc/hostname "$root"/etc/resolv.conf
    # The mirror is the builder's, not the image's: builds mount the machine's apt sources.
    rm -f "$root"/etc/apt/sources.list
    tar --numeric-owner -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    log "built in $(( $(date +%s) - started )) s: $tarball"
fi
podman import --quiet --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$ref" >/dev/null
log "imported $ref"
# Older versions of this base (and their tarballs) are no longer used.
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' localhost/ksense-base | grep -vxF "$ref" || true); do
    podman rmi --force "$old" >/dev/null 2>&1 || true
done
find "$cache" -maxdepth 1 -name 'ksense-base-*.tar' ! -name "${tarball##*/}" -delete
echo "$ref"
