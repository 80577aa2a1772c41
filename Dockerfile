# syntax=docker/dockerfile:1
# ksense node image: the exporter (eBPF through Debian's bcc) and the scorer.
#   docker build -t ksense-node:0.1.0 .
# bcc comes from the distribution (python3-bpfcc, built for Debian 12's Python 3.11), never
# from PyPI, so the base is Debian 12 and Python is Debian's python3. Kernel headers are NOT in
# the image: they must match the node's kernel, so the DaemonSet mounts /lib/modules and
# /usr/src from the node. The base is pinned to a point release; pin it by digest in your
# build (`docker buildx imagetools inspect debian:12.12-slim`) for reproducible images.
ARG BASE_IMAGE=debian:12.12-slim

# --- build: a venv with the exporter's and the scorer's pinned wheels --------------------------
FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY requirements/exporter.txt requirements/scorer.txt /tmp/requirements/
RUN python3 -m venv /opt/ksense \
 && /opt/ksense/bin/pip install --no-cache-dir --disable-pip-version-check \
      -r /tmp/requirements/exporter.txt -r /tmp/requirements/scorer.txt
COPY common/ /app/common/
COPY exporter/ /app/exporter/
COPY scorer/ /app/scorer/
COPY collector_only.py /app/
# The root file system is read-only at run time: compile the byte code now.
RUN /opt/ksense/bin/python -m compileall -q /app

# --- run -----------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
# python3-bpfcc brings libbpfcc (with its LLVM/clang libraries); bpfcc-tools (the CLI tools) and
# linux-headers are not needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-bpfcc \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/ksense /opt/ksense
COPY --from=build /app /app
# Debian's bcc module, visible in the venv (the one link scripts/setup.sh makes too).
RUN ln -s /usr/lib/python3/dist-packages/bcc /opt/ksense/lib/python3.11/site-packages/bcc \
 && /opt/ksense/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('bcc') is None)"
ENV PATH=/opt/ksense/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
EXPOSE 9860 9861 8443
# Non-root by default: the scorer runs as this user. The exporter's DaemonSet sets runAsUser: 0
# (loading eBPF needs it) with all capabilities dropped but BPF, PERFMON, SYS_RESOURCE and the
# three it gives root up with (SETUID, SETGID, CHOWN): once attached it serves as 65534:65534.
USER 65532:65532
CMD ["python3", "-m", "scorer"]
