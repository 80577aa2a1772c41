# syntax=docker/dockerfile:1
# ksense's node-side images, two targets of one file:
#   exporter  eBPF through Debian's bcc (python3-bpfcc): the DaemonSet on every node
#   scorer    the fuzzy scorer (Flask on gunicorn gthread, numpy): no bcc, no compiler, no headers
# `make images` builds both (deploy/images/build.py, which passes the build-time settings below);
# by hand:
#   docker build --target exporter -t ksense-exporter:0.1.0 .
#   docker build --target scorer   -t ksense-scorer:0.1.0 .
# bcc comes from the distribution (python3-bpfcc, built for Debian 12's Python 3.11), never from
# PyPI, so the base is Debian 12 and Python is Debian's python3 (pinned below). Kernel headers
# are NOT in the image: they must match the node's kernel, so the DaemonSet mounts /lib/modules
# and /usr/src from the node. The base is pinned to a point release; pin it by digest in your
# build (`docker buildx imagetools inspect debian:12.12-slim`) for reproducible images. Any
# Debian 12 image with apt sources works as BASE_IMAGE (on a machine without a registry,
# `make images` uses a local one built by deploy/images/base.sh and mounts the machine's apt sources).
#
# Build-time settings, never stored in a layer: `--secret id=pip_conf,src=FILE` (a pip
# configuration, e.g. an index mirror) and `--secret id=ca_bundle,src=FILE` (CAs of a
# TLS-intercepting proxy). Without them pip uses PyPI and the base's CAs.
ARG BASE_IMAGE=debian:12.12-slim

# --- Debian's Python: the runtime both images share -----------------------------------------------
FROM ${BASE_IMAGE} AS python
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

# --- build: each image's venv with its pinned wheels, at the path it runs from, without pip and
# the packages' own test suites (numpy's: 17 MB) ----------------------------------------------------
FROM python AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY requirements/exporter.txt requirements/scorer.txt /tmp/requirements/

FROM build AS build-exporter
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
 && if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && python3 -m venv /opt/ksense \
 && /opt/ksense/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements/exporter.txt \
 && /opt/ksense/bin/pip uninstall -y -q pip setuptools \
 && find /opt/ksense -depth -type d -name tests -exec rm -rf {} +
COPY common/ /app/common/
COPY exporter/ /app/exporter/
# Byte code compiled now: the root file system is read-only at run time.
RUN /opt/ksense/bin/python -m compileall -q /app

FROM build AS build-scorer
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
 && if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && python3 -m venv /opt/ksense \
 && /opt/ksense/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements/scorer.txt \
 && /opt/ksense/bin/pip uninstall -y -q pip setuptools \
 && find /opt/ksense -depth -type d -name tests -exec rm -rf {} +
# The modules the components share (names, config reader, logging, CSV sink, the /metrics
# server) live in common/, which imports no component: the scorer ships no exporter code.
COPY common/ /app/common/
COPY scorer/ /app/scorer/
RUN /opt/ksense/bin/python -m compileall -q /app \
 && cd /app && /opt/ksense/bin/python -c "import sys, scorer.__main__; sys.exit('bcc' in sys.modules)"

# --- scorer ------------------------------------------------------------------------------------------
FROM python AS scorer
COPY --from=build-scorer /opt/ksense /opt/ksense
COPY --from=build-scorer /app /app
ENV PATH=/opt/ksense/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
EXPOSE 8443 9861
# The restricted pod's user (deploy/base/scorer-deployment.yaml).
USER 65532:65532
CMD ["python3", "-m", "scorer"]

# --- exporter (the default target) ---------------------------------------------------------------
FROM python AS exporter
# python3-bpfcc brings libbpfcc and the clang/LLVM libraries it compiles the programs with (most
# of this image's size); bpfcc-tools (the CLI tools) and linux-headers are not needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-bpfcc=0.26.0+ds-1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY --from=build-exporter /opt/ksense /opt/ksense
COPY --from=build-exporter /app /app
# Debian's bcc module, visible in the venv (the one link scripts/setup.sh makes too).
RUN ln -s /usr/lib/python3/dist-packages/bcc /opt/ksense/lib/python3.11/site-packages/bcc \
 && /opt/ksense/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('bcc') is None)"
ENV PATH=/opt/ksense/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
EXPOSE 9860
# Non-root by default. The DaemonSet sets runAsUser: 0 (loading eBPF needs it) with every
# capability dropped but BPF, PERFMON, SYS_RESOURCE and the three it gives root up with (SETUID,
# SETGID, CHOWN): once attached it serves as 65534:65534.
USER 65532:65532
CMD ["python3", "-m", "exporter"]
