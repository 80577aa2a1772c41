"""Wiring shared by `python -m exporter` and `collector_only.py`: config -> source -> sampler
-> sinks, with signals, the start-up banner and the live summary line.

Everything here is glue; the work happens in sources/, core/ and sinks/.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime

from common.csvfile import CsvSink, QueuedCsvWriter
from common.names import (
    KERNEL_METRICS_COLUMNS,
    KERNEL_METRICS_CSV_NAME,
    POD_METRICS_COLUMNS,
    POD_METRICS_CSV_NAME,
    SOURCE_REPLAY,
)
from exporter import baseline_store, preflight, privilege, statedir
from exporter.config import ExporterConfig
from exporter.core import derive
from exporter.core.model import Snapshot, is_live
from exporter.pods.kubenames import PodNames
from exporter.pods.kubenames import endpoint as kube_endpoint
from exporter.pods.tracker import NameLookup
from exporter.sampler import Sampler
from exporter.sources import Source, SourceUnavailable, procfs, replay
from exporter.sources.procstat import ProcSampler

log = logging.getLogger("ksense.exporter")

#: A live reading older than this many intervals is withheld from /metrics and fails /readyz:
#: one late tick is jitter, three mean the sampler is stuck.
STALE_AFTER_INTERVALS = 3


def open_source(cfg: ExporterConfig, *, strict_ebpf: bool = False, names: NameLookup | None = None) -> Source:
    """The configured source. `auto` tries eBPF and falls back to procfs, saying why; with
    `strict_ebpf` (collector_only) or `ebpf` an eBPF failure is fatal. `names` labels pods
    with their namespace and name."""
    if cfg.source == SOURCE_REPLAY:
        assert cfg.replay_file is not None
        return replay.open(cfg.replay_file, speed=cfg.speed)
    if cfg.source == "procfs":
        return procfs.open(proc_root=cfg.proc_root, interval_s=cfg.interval_s)
    try:
        problems = preflight.check()
        if problems:
            raise SourceUnavailable("; ".join(p.what for p in problems))
        from exporter.sources import ebpf

        pods = None
        if cfg.pod_metrics:
            pods = ebpf.PodOptions(
                node=cfg.node, max_pods=cfg.pod_max, top_k=cfg.pod_top_k, cgroup_root=cfg.cgroup_root,
                names=names,
            )
        return ebpf.open(
            proc_sampler=ProcSampler(cfg.proc_root), interval_s=cfg.interval_s, slots=cfg.bpf_map_entries,
            pods=pods,
        )
    except SourceUnavailable as exc:
        if cfg.source == "ebpf" or strict_ebpf:
            raise
        log.warning("event=ebpf_unavailable fallback=procfs reason=%r", str(exc))
        return procfs.open(proc_root=cfg.proc_root, interval_s=cfg.interval_s)


def pod_names(cfg: ExporterConfig) -> PodNames | None:
    """The pod name cache KSENSE_KUBE_API asks for, not started (it reads its credentials now,
    while the process may still read root's files; its thread starts once root is given up).
    None, with the reason logged, when there is no API to ask."""
    if not cfg.pod_metrics or cfg.source in (SOURCE_REPLAY, "procfs"):
        return None
    api, why = kube_endpoint(cfg.kube_api, os.environ, cfg.kube_token_file)
    if api is None:
        level = logging.INFO if cfg.kube_api == "off" else logging.WARNING
        log.log(level, "event=pod_names_unavailable reason=%r effect='pods are labelled by uid only'", why)
        return None
    # Four per attributable pod: the API also lists pods whose containers have not started.
    return PodNames(api, cfg.node, max_pods=4 * cfg.pod_max)


def deriver(cfg: ExporterConfig, source_name: str, *, persist: bool = True) -> Callable:
    """derive.step bound to its state, persisting the calibration of live sources (unless
    `persist` is False: a state directory that cannot be trusted).

    Replay recomputes everything from the recording, so it neither restores nor saves a
    baseline (a live node's baseline must not leak into an offline analysis, or back).
    """
    params = derive.DeriveParams(
        warmup_s=cfg.warmup_s, baseline_win=cfg.baseline_win, min_count=cfg.baseline_min_count
    )
    store = None
    restored = None
    if persist and source_name != SOURCE_REPLAY:
        store = baseline_store.BaselineStore(
            cfg.state_dir,
            params,
            context={"source": source_name, "interval_s": cfg.interval_s, "node": cfg.node},
            max_age_s=cfg.baseline_max_age_s,
        )
        restored, warning = store.load()
        if warning:
            log.warning("event=baseline_not_restored reason=%r", warning)
        elif restored is not None:
            log.info("event=baseline_restored path=%s", cfg.state_dir)
    state = derive.initial_state(params, restored)

    def step(raw):
        nonlocal state
        old = state
        state, derived = derive.step(state, raw)
        if store is not None and (cal := derive.calibration_changed(old, state)) is not None:
            problem = store.save(cal)
            if problem:
                log.warning("event=baseline_save_failed reason=%r", problem)
            else:
                log.info("event=baseline_saved frozen=1 k=%s fcal=%s", cal.k, cal.fcal)
        return derived

    return step


def _ms(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.3f}ms"


def _pct(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.1f}%"


def summary_line(snap: Snapshot) -> str:
    """The one-line live view `make run` prints per interval."""
    r = snap.reading.raw if snap.reading else None

    def n(v: int | None) -> str:
        return "-" if v is None else str(v)

    d = snap.derived
    if r is None or d is None:
        return f"ksense node={snap.node} src={snap.source} waiting for the first interval"
    parts = [
        f"ksense node={snap.node} src={snap.source}",
        f"runq p99={_ms(r.sched_p99_ms)} avg={_ms(r.sched_avg_ms)} n={n(r.sched_count)}",
        f"dstate n={n(r.dstate_count)} {_ms(r.dstate_total_ms)}",
        f"netrx n={n(r.softirq_count)} {_ms(r.softirq_total_ms)}",
        f"cpu={_pct(r.cpu_util)} psi={_pct(r.psi)}",
    ]
    if d.frozen:
        f = "-" if not math.isfinite(d.friction) else f"{d.friction:.2f}"
        e = "-" if not math.isfinite(d.energy) else f"{d.energy:.2f}"
        parts.append(f"FROZEN F={f} E={e}")
    else:
        parts.append(f"CALIBRATING {d.samples} samples, warm-up {d.warmup_remaining_s:.0f}s left")
    return " | ".join(parts)


def _give_up_root(cfg: ExporterConfig, source_name: str, drop_to: tuple[int, int] | None) -> tuple[bool, str | None]:
    """Make the state directory ready for the uid the exporter serves as (and, when it is to
    become `drop_to` (uid, gid), the CSV's directory), then become it with no capability.
    Returns (whether the baseline persists, why root could not be given up)."""
    persist = is_live(source_name)
    if persist:
        owner = drop_to or (os.geteuid(), os.getegid())
        problem = statedir.prepare(cfg.state_dir, *owner, hand_over=(baseline_store.FILE_NAME,))
        if problem:
            log.warning("event=state_dir_rejected path=%s reason=%r effect='baseline neither restored nor saved'",
                        cfg.state_dir, problem)
            persist = False
    if drop_to is None:
        return persist, None
    if cfg.csv_path is not None and (problem := statedir.prepare_output(cfg.csv_path.parent, *drop_to)):
        log.warning("event=csv_dir_not_writable reason=%r effect='no CSV rows' hint='set KSENSE_METRICS_CSV to a "
                    "directory uid %d can write'", problem, drop_to[0])
    # Once root is given up the interpreter's own library may be out of reach (one under /root,
    # as pyenv installs it; the image's is not), so what the standard library imports on first
    # use is imported now: datetime.strptime imports _strptime (the replay parser needs it).
    datetime.strptime("2000", "%Y")
    try:
        privilege.drop(*drop_to)
    except privilege.PrivilegeError as exc:
        return persist, str(exc)
    log.info("event=privileges_dropped uid=%d gid=%d capabilities=none", *drop_to)
    return persist, None


def run(cfg: ExporterConfig, *, http: bool, summary: bool, strict_ebpf: bool = False) -> int:
    """Run until SIGTERM/SIGINT (or the end of a replay). Returns the process exit code."""
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("event=stopping signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    started = time.monotonic()
    names = pod_names(cfg) if http else None
    try:
        source = open_source(cfg, strict_ebpf=strict_ebpf, names=names)
    except SourceUnavailable as exc:
        print(f"ksense: cannot start: {exc}", file=sys.stderr)
        return 2
    missing = ",".join(source.missing_columns) or "none"
    log.warning(
        "event=source_selected source=%s node=%s empty_columns=%s open_s=%.2f",
        source.name, cfg.node, missing, time.monotonic() - started,
    )
    if source.name == "procfs":
        print(
            "ksense: running on the procfs source (no eBPF): run-queue total/avg only; "
            f"these columns stay empty: {missing}. Run as root with bcc for the full signal set.",
            file=sys.stderr,
        )

    # The serving exporter needs root only to attach its programs, which is done: it gives
    # root up before it starts a thread or serves a request. collector_only.py (no listener,
    # a person's foreground tool) keeps the user it was started as.
    drop_to = cfg.run_as if http and os.geteuid() == 0 and cfg.run_as[0] != 0 else None
    if http:
        from common import metrics  # before the drop: see _give_up_root
        from exporter.sinks import prometheus
    persist, problem = _give_up_root(cfg, source.name, drop_to)
    if problem:
        source.close()
        print(f"ksense: cannot give up root: {problem}. Grant CAP_SETUID, CAP_SETGID and CAP_CHOWN, "
              "or set KSENSE_RUN_AS=0 to keep root (not recommended).", file=sys.stderr)
        return 2

    if names is not None and getattr(source, "pods_on", False):
        names.start()
        log.info("event=pod_names_watch node=%s", cfg.node)
    else:
        names = None

    # The sampler hands rows to a writer thread: for a live source a disk that hangs costs rows,
    # never intervals; a replay (as fast as asked) waits for the disk instead, losing no row.
    sink = None
    if cfg.csv_path is not None:
        sink = QueuedCsvWriter(
            CsvSink(cfg.csv_path, KERNEL_METRICS_COLUMNS, max_bytes=cfg.csv_max_bytes, keep=cfg.csv_keep),
            drop_when_full=is_live(source.name),
        )

    pod_sink = None
    if cfg.pod_csv_path is not None and getattr(source, "pods_on", False):
        pod_sink = QueuedCsvWriter(
            CsvSink(cfg.pod_csv_path, POD_METRICS_COLUMNS, max_bytes=cfg.csv_max_bytes, keep=cfg.csv_keep),
            max_rows=60 * cfg.pod_max,
        )
    csv_sinks = {KERNEL_METRICS_CSV_NAME: sink} if sink is not None else {}
    if pod_sink is not None:
        csv_sinks[POD_METRICS_CSV_NAME] = pod_sink

    show = (lambda snap: print(summary_line(snap), file=sys.stderr, flush=True)) if summary else None
    sampler = Sampler(
        node=cfg.node,
        source=source,
        derive=deriver(cfg, source.name, persist=persist),
        write_row=sink.write if sink is not None else None,
        write_pod_row=pod_sink.write if pod_sink is not None else None,
        on_snapshot=show,
    )
    server = None
    if http:
        collector = prometheus.ExporterCollector(
            sampler.latest,
            csv_sinks=csv_sinks,
            max_age_s=STALE_AFTER_INTERVALS * cfg.interval_s,
        )
        server = metrics.MetricsServer(
            metrics.make_registry(collector), collector.ready, host=cfg.host, port=cfg.port,
            limits=metrics.Limits(max_requests=cfg.max_requests),
        )
        try:
            server.start()
        except OSError as exc:
            source.close()
            for s in csv_sinks.values():
                s.close()
            print(f"ksense: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
            return 2
        shown_host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
        print(f"ksense: metrics at http://{shown_host}:{server.port}/metrics", file=sys.stderr, flush=True)
    if sink is not None:
        sink.start()
        print(f"ksense: writing {cfg.csv_path}", file=sys.stderr, flush=True)
    if pod_sink is not None:
        pod_sink.start()
        print(f"ksense: writing {cfg.pod_csv_path}", file=sys.stderr, flush=True)
    try:
        sampler.run(stop)
    except SourceUnavailable as exc:  # a malformed replay file is found while reading
        print(f"ksense: {exc}", file=sys.stderr)
        return 2
    finally:
        if names is not None:
            names.stop()
        source.close()
        for s in csv_sinks.values():
            s.close()
        if server is not None:
            server.shutdown()
    log.info("event=stopped pid=%d", os.getpid())
    return 0
