"""ExporterConfig: the exporter's whole configuration, parsed once from env + flags.

docs/configuration.md names the variables; flags override them; every invalid value is reported in one
error, and unknown KSENSE_* / FUZZY_* variables (typos) are warned about. Nothing here reads
the environment at import time: `from_env(environ, argv)` is called once by the entry points.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.envconf import ConfigError, EnvReader, unknown_variables
from common.httpserver import Limits
from common.names import POD_METRICS_CSV_NAME

__all__ = ["ConfigError", "ExporterConfig", "build_parser", "from_env", "unknown_variables"]

SOURCES = ("auto", "ebpf", "procfs")


@dataclass(frozen=True)
class ExporterConfig:
    # --- identity and source --------------------------------------------------------------
    node: str
    """`node` label on every series: KSENSE_NODE_NAME, else NODE_NAME (downward API), else hostname."""
    source: str
    """auto (ebpf when root and bcc work, else procfs), ebpf, procfs or replay."""
    replay_file: Path | None = None
    """Recorded kernel_metrics.csv for source replay."""
    speed: float = 1.0
    """Replay speed factor (0 = as fast as possible); recorded time drives all maths anyway."""
    proc_root: Path = Path("/proc")
    """/proc of the host: /host/proc in the DaemonSet, where the container's own /proc lies."""
    interval_s: float = 1.0
    """Sampling interval, seconds. 1 s matches the recordings and the scorer's tick."""
    bpf_map_entries: int = 65536
    """Slots per timestamp table (power of two): bounds kernel memory at 512 KiB per table."""
    # --- per-pod attribution (docs/design.md#per-pod-attribution) --------------------------------
    pod_metrics: bool = True
    """Per-pod run-queue wait and D-state in the kernel, pod_metrics.csv and the per-pod families
    (KSENSE_POD_METRICS=on|off). On by default: it costs ~1 % on a switch-heavy benchmark
    (docs/performance.md); off leaves the per-pod code out of the compiled program."""
    pod_max: int = 256
    """Pods the kernel maps can attribute; more are counted (ksense_pods_untracked_total), not attributed."""
    pod_top_k: int = 20
    """Pods exposed on /metrics by recent wait; the rest are summed under pod_uid="other"."""
    cgroup_root: Path | None = None
    """The cgroup v2 hierarchy to look for pods in; None: /sys/fs/cgroup, else /sys/fs/cgroup/unified."""
    kube_api: str = "auto"
    """Where pod names come from (exporter/pods/kubenames.py): `auto` (the in-cluster API in a pod,
    none elsewhere), `off` (UID only) or an http(s) URL (kubectl proxy, tests)."""
    kube_token_file: Path | None = None
    """Bearer token for a KSENSE_KUBE_API URL (in a pod the service account's is used)."""
    # --- baseline -----------------------------------------------------------------------------
    warmup_s: float = 600.0
    """Warm-up before the baseline may freeze: ten minutes of normal behaviour."""
    baseline_win_s: float = 300.0
    """Newest accepted samples kept for the baseline (samples at the 1 s interval)."""
    baseline_min_count: int = 50
    """Scheduling events an interval needs to be a baseline sample (quiet intervals are noise)."""
    state_dir: Path = Path("/var/lib/ksense/state")
    """Where the frozen baseline is persisted so a restart skips the warm-up. Not under /tmp:
    it must be ours alone (exporter/statedir.py), and the DaemonSet mounts /var/lib/ksense."""
    baseline_max_age_s: float = 86400.0
    """A persisted baseline older than this is ignored: the node's normal may have moved."""
    # --- outputs ------------------------------------------------------------------------------
    csv_path: Path | None = Path("/tmp/ksense/kernel_metrics.csv")
    """kernel_metrics.csv; None with --no-csv."""
    csv_max_bytes: int = 64 * 1024 * 1024
    """Rotate the CSV past this size (a day at 1 Hz is ~17 MB)."""
    csv_keep: int = 5
    """Rotated CSV files kept."""
    host: str = "0.0.0.0"
    """Address of the /metrics server."""
    port: int = 9860
    """Port of the /metrics server."""
    max_requests: int = Limits.max_requests
    """Requests the /metrics server handles at once; more are answered 503 (node_exporter's
    --web.max-requests)."""
    run_as: tuple[int, int] = (65534, 65534)
    """uid and gid `python -m exporter`, started as root, becomes once its source is open, with
    no capability left (exporter/privilege.py); uid 0 keeps root. collector_only.py, a
    foreground tool with no listener, stays the user it was started as."""
    log_format: str = "text"
    """text (key=value) or json."""

    @property
    def pod_csv_path(self) -> Path | None:
        """pod_metrics.csv, beside kernel_metrics.csv (None with --no-csv or per-pod off)."""
        if self.csv_path is None or not self.pod_metrics:
            return None
        return self.csv_path.with_name(POD_METRICS_CSV_NAME)

    @property
    def baseline_win(self) -> int:
        """Baseline window in samples (the window in seconds at the sampling interval)."""
        return max(1, round(self.baseline_win_s / self.interval_s))


def default_node_name(environ: Mapping[str, str]) -> str:
    return environ.get("KSENSE_NODE_NAME") or environ.get("NODE_NAME") or socket.gethostname()


def build_parser(prog: str, *, http: bool = True) -> argparse.ArgumentParser:
    """Flags override the environment; the help names the variable behind each flag."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="ksense exporter: kernel run-queue latency, D-state and NET_RX softirq time (eBPF), "
        "CPU and PSI (/proc), baseline -> Friction / Direction / Energy, as Prometheus metrics "
        "and kernel_metrics.csv.",
        epilog="Every flag falls back to its environment variable (docs/configuration.md), then to the default.",
    )
    p.add_argument("--source", help="auto|ebpf|procfs|replay:FILE (KSENSE_SOURCE, default auto)")
    p.add_argument("--speed", type=str, help="replay speed factor, 0 = as fast as possible (default 1)")
    p.add_argument("--interval", type=str, help="sampling interval in seconds (KSENSE_INTERVAL_S, default 1)")
    p.add_argument("--node", help="node label (KSENSE_NODE_NAME, else NODE_NAME, else hostname)")
    p.add_argument("--proc-root", help="procfs root (KSENSE_PROC_ROOT, default /proc)")
    p.add_argument("--csv", metavar="PATH",
                   help=f"kernel_metrics.csv path (KSENSE_METRICS_CSV, default {ExporterConfig.csv_path})")
    p.add_argument("--no-csv", action="store_true", help="do not write the CSV")
    p.add_argument("--state-dir",
                   help=f"baseline persistence dir (KSENSE_STATE_DIR, default {ExporterConfig.state_dir})")
    p.add_argument("--warmup", type=str, help="baseline warm-up seconds (KSENSE_WARMUP_S, default 600)")
    if http:
        p.add_argument("--host", help="metrics listen address (KSENSE_EXPORTER_HOST, default 0.0.0.0)")
        p.add_argument("--port", type=str, help="metrics port (KSENSE_EXPORTER_PORT, default 9860)")
        p.add_argument("--max-requests", type=str,
                       help="requests the metrics server handles at once, more get 503 "
                       f"(KSENSE_EXPORTER_MAX_REQUESTS, default {ExporterConfig.max_requests})")
        p.add_argument("--run-as", metavar="UID[:GID]",
                       help="when started as root, become this uid:gid with no capability once the source is "
                       "open; 0 keeps root (KSENSE_RUN_AS, default {}:{})".format(*ExporterConfig.run_as))
    return p


def _ids(text: str) -> tuple[int, int] | None:
    """`UID` or `UID:GID` (numbers; GID defaults to UID), or None when malformed."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 2 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    ids = [int(p) for p in parts]
    if any(i >= 2**32 - 1 for i in ids):
        return None
    return ids[0], ids[-1]


def from_env(environ: Mapping[str, str], args: argparse.Namespace | None = None) -> ExporterConfig:
    """Build the config; raise ConfigError listing every bad value."""
    r = EnvReader(environ, args)
    a = vars(args) if args is not None else {}
    problems = r.problems
    pick, number = r.text, r.number

    source_text = pick("source", "KSENSE_SOURCE", "auto") or "auto"
    replay_file = None
    if source_text.startswith("replay:"):
        replay_file = Path(source_text[len("replay:") :])
        source = "replay"
        if not str(replay_file) or str(replay_file) == ".":
            problems.append("KSENSE_SOURCE=replay: needs a file, e.g. replay:/path/kernel_metrics.csv")
    elif source_text in SOURCES:
        source = source_text
    else:
        problems.append(f"KSENSE_SOURCE={source_text!r}: expected auto, ebpf, procfs or replay:FILE")
        source = "auto"

    entries = number("", "KSENSE_BPF_MAP_ENTRIES", 65536, minimum=64, integer=True)
    if entries & (entries - 1):
        problems.append(f"KSENSE_BPF_MAP_ENTRIES={entries}: must be a power of two")

    csv_path: Path | None = Path(pick("csv", "KSENSE_METRICS_CSV", str(ExporterConfig.csv_path)) or "")
    if a.get("no_csv"):
        csv_path = None
    elif str(csv_path) in ("", "."):
        problems.append("KSENSE_METRICS_CSV is empty: give a path, or pass --no-csv")

    log_format = r.choice("", "KSENSE_LOG_FORMAT", "text", ("text", "json"))

    run_as_text = pick("run_as", "KSENSE_RUN_AS", None)
    run_as = ExporterConfig.run_as
    if run_as_text:
        if (ids := _ids(run_as_text)) is None:
            problems.append(f"KSENSE_RUN_AS={run_as_text!r}: expected UID or UID:GID (numbers), 0 keeps root")
        else:
            run_as = ids

    pod_metrics = r.choice("", "KSENSE_POD_METRICS", "on" if ExporterConfig.pod_metrics else "off", ("on", "off"))
    cgroup_root_text = pick("", "KSENSE_CGROUP_ROOT", None)
    kube_api = pick("", "KSENSE_KUBE_API", ExporterConfig.kube_api) or ExporterConfig.kube_api
    if kube_api not in ("auto", "off") and not kube_api.startswith(("http://", "https://")):
        problems.append(f"KSENSE_KUBE_API={kube_api!r}: expected auto, off or an http(s) URL")
    token_file_text = pick("", "KSENSE_KUBE_TOKEN_FILE", None)

    interval = number("interval", "KSENSE_INTERVAL_S", 1.0, minimum=0.01)
    cfg = ExporterConfig(
        node=a.get("node") or default_node_name(environ),
        source=source,
        replay_file=replay_file,
        speed=number("speed", "KSENSE_REPLAY_SPEED", 1.0, minimum=0.0),
        proc_root=Path(pick("proc_root", "KSENSE_PROC_ROOT", "/proc") or "/proc"),
        interval_s=interval,
        bpf_map_entries=entries,
        pod_metrics=pod_metrics == "on",
        pod_max=number("", "KSENSE_POD_MAX", ExporterConfig.pod_max, minimum=1, maximum=4096, integer=True),
        pod_top_k=number("", "KSENSE_POD_TOP_K", ExporterConfig.pod_top_k, minimum=0, maximum=1000, integer=True),
        cgroup_root=Path(cgroup_root_text) if cgroup_root_text else None,
        kube_api=kube_api,
        kube_token_file=Path(token_file_text) if token_file_text else None,
        warmup_s=number("warmup", "KSENSE_WARMUP_S", 600.0, minimum=0.0),
        baseline_win_s=number("", "KSENSE_BASELINE_WIN_S", 300.0, minimum=interval),
        baseline_min_count=number("", "KSENSE_BASELINE_MIN_COUNT", 50, minimum=0, integer=True),
        state_dir=Path(pick("state_dir", "KSENSE_STATE_DIR", None) or ExporterConfig.state_dir),
        baseline_max_age_s=number("", "KSENSE_BASELINE_MAX_AGE_S", 86400.0, minimum=0.0),
        csv_path=csv_path,
        csv_max_bytes=number("", "KSENSE_CSV_MAX_BYTES", 64 * 1024 * 1024, minimum=4096, integer=True),
        csv_keep=number("", "KSENSE_CSV_KEEP", 5, minimum=1, integer=True),
        host=pick("host", "KSENSE_EXPORTER_HOST", "0.0.0.0") or "0.0.0.0",
        port=number("port", "KSENSE_EXPORTER_PORT", 9860, minimum=0, maximum=65535, integer=True),
        max_requests=number("max_requests", "KSENSE_EXPORTER_MAX_REQUESTS", ExporterConfig.max_requests,
                            minimum=1, integer=True),
        run_as=run_as,
        log_format=log_format,
    )
    r.check()
    return cfg
