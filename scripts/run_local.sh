#!/usr/bin/env bash
# `make run`: the whole single-machine stack, no cluster. The exporter (eBPF when root and bcc
# work, else procfs, said loudly) serves /metrics on KSENSE_EXPORTER_PORT; the scorer reads it
# directly (the embedded local source) and prints one line per tick: node, score, level,
# decision. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
port=${KSENSE_EXPORTER_PORT:-9860}

KSENSE_SUMMARY=0 "$PY" -m exporter "$@" &
exporter=$!
cleanup() { kill -TERM "$exporter" 2>/dev/null || true; wait "$exporter" 2>/dev/null || true; }
trap cleanup EXIT

KSENSE_SUMMARY=1 "$PY" -m scorer --exporter-url "http://127.0.0.1:${port}/metrics"
