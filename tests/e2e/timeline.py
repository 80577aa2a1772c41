"""What the end-to-end run saw, second by second, and the files an SRE reads afterwards.

`Observer` is one background thread polling, against the running Stack:
- both scorer replicas' `GET /score` every 0.25 s (the decision where it is made: freshness
  figures), kept as per-replica, per-node decision changes;
- Prometheus every 0.5 s for `max by (node) (ksense_node_score)` and `min by (node)
  (ksense_node_admission_allowed)` — what the schedulers see (docs/metrics.md#scorer-metrics aggregation) —
  plus the API server's pods, giving one timeline row per node: time, node, score, decision,
  binds (pods bound to it so far), pending (fuzzy-scheduler pods without a node).

`write_outputs` writes `timeline.csv` (those rows), `events.csv` (the scenario's marks),
`binds.csv`, `admission_reviews.csv`, `decisions.csv` (scorer-side decision changes) and, when
matplotlib (the `plot` extra) is installed, `timeline.png`: scores per node with the 45/55/60/70
bands, each node's deny spans, a marker per bind on the node's curve, the scenario's marks, and
pending pods below.
"""

from __future__ import annotations

import csv
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

from tests.e2e.stack import NODES, Stack

SCORE_QUERY = "max by (node) (ksense_node_score)"
ALLOWED_QUERY = "min by (node) (ksense_node_admission_allowed)"
TIMELINE_COLUMNS = ("time", "node", "score", "decision", "binds", "pending")


def wall_text(wall: float) -> str:
    """Local wall time like every ksense CSV (`YYYY-MM-DD HH:MM:SS.mmm`)."""
    dt = datetime.fromtimestamp(wall)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


@dataclass(frozen=True)
class Row:
    wall: float
    node: str
    score: float
    decision: str  # allow / deny / "" (no series yet)
    binds: int
    pending: int


@dataclass(frozen=True)
class Change:
    """A scorer replica's decision for a node changed (or was first seen)."""

    mono: float
    wall: float
    replica: int
    node: str
    decision: str
    score: float
    cpu_pct: float | None
    reason: str | None


@dataclass(frozen=True)
class Mark:
    mono: float
    wall: float
    label: str
    detail: str = ""


class Observer:
    """The polling thread of the module docstring; `start()` / `stop()`, thread-safe reads."""

    def __init__(self, stack: Stack, *, score_every_s: float = 0.25, prom_every_s: float = 0.5):
        self.stack = stack
        self.score_every_s, self.prom_every_s = score_every_s, prom_every_s
        self.rows: list[Row] = []
        self.changes: list[Change] = []
        self.marks: list[Mark] = []
        #: (mono, wall, node -> (score, allowed)) per Prometheus poll
        self.prom_views: list[tuple[float, float, dict[str, tuple[float, bool]]]] = []
        self.latest: dict[tuple[int, str], dict] = {}  # (replica, node) -> last /score report
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sessions = {i: requests.Session() for i in (1, 2)}

    def start(self) -> Observer:
        self._thread = threading.Thread(target=self._run, name="e2e-observer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for s in self._sessions.values():
            s.close()

    def __enter__(self) -> Observer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark(self, label: str, detail: str = "") -> Mark:
        m = Mark(time.monotonic(), time.time(), label, detail)
        with self._lock:
            self.marks.append(m)
        return m

    # --- polling --------------------------------------------------------------------------------
    def _run(self) -> None:
        next_score = next_prom = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_score:
                next_score = now + self.score_every_s
                for replica in (1, 2):
                    self._poll_scorer(replica)
            if now >= next_prom:
                next_prom = now + self.prom_every_s
                self._poll_prometheus()
            self._stop.wait(max(0.0, min(next_score, next_prom) - time.monotonic()))

    def _poll_scorer(self, replica: int) -> None:
        try:
            resp = self._sessions[replica].get(self.stack.scorer_url(replica) + "/score", timeout=1.0,
                                               verify=str(self.stack.ca_file))
            body = resp.json() if resp.status_code == 200 else {}
        except (requests.RequestException, ValueError):
            return
        mono, wall = time.monotonic(), time.time()
        for report in body.get("nodes") or ():
            node = report.get("node")
            with self._lock:
                last = self.latest.get((replica, node))
                self.latest[(replica, node)] = report
                if last is None or last.get("decision") != report.get("decision"):
                    self.changes.append(Change(mono, wall, replica, node, report.get("decision") or "",
                                               float(report.get("score") or math.nan),
                                               (report.get("inputs") or {}).get("cpu_pct"), report.get("reason")))

    def prom_view(self, at: float | None = None) -> dict[str, tuple[float, bool]]:
        """node -> (score, allowed) as the schedulers' aggregation gives it (at Unix time `at`)."""
        params = {} if at is None else {"time": f"{at:.3f}"}
        out: dict[str, list] = {}
        for query, key in ((SCORE_QUERY, 0), (ALLOWED_QUERY, 1)):
            try:
                body = requests.get(f"{self.stack.prom_url}/api/v1/query", params={"query": query, **params},
                                    timeout=2).json()
            except (requests.RequestException, ValueError):
                return {}
            for sample in body.get("data", {}).get("result", []):
                node = sample["metric"].get("node")
                out.setdefault(node, [math.nan, None])[key] = float(sample["value"][1])
        return {n: (v[0], v[1] == 1.0) for n, v in out.items() if v[1] is not None}

    def _poll_prometheus(self) -> None:
        view = self.prom_view()
        mono, wall = time.monotonic(), time.time()
        api = self.stack.api
        pods = api.store.pods() if api is not None else []
        ours = [p for p in pods if (p.get("spec") or {}).get("schedulerName") == "fuzzy-scheduler"]
        pending = sum(1 for p in ours if not p["spec"].get("nodeName"))
        with self._lock:
            self.prom_views.append((mono, wall, view))
            for node in NODES:
                score, allowed = view.get(node, (math.nan, None))
                decision = "" if allowed is None else ("allow" if allowed else "deny")
                binds = sum(1 for p in ours if p["spec"].get("nodeName") == node)
                self.rows.append(Row(wall, node, score, decision, binds, pending))

    # --- reading ----------------------------------------------------------------------------------
    def first_change(self, node: str, decision: str, after: float, replica: int | None = None) -> Change | None:
        """The first scorer-side change of `node` to `decision` after monotonic `after`."""
        with self._lock:
            for c in self.changes:
                if c.node == node and c.decision == decision and c.mono >= after and replica in (None, c.replica):
                    return c
        return None

    def scorer_decision(self, node: str) -> set[str]:
        """Current decisions of `node` at both replicas (an empty set before the first answer)."""
        with self._lock:
            return {r.get("decision") for (rep, n), r in self.latest.items() if n == node}

    def scorer_report(self, replica: int, node: str) -> dict:
        with self._lock:
            return dict(self.latest.get((replica, node)) or {})

    def latest_prom(self) -> dict[str, tuple[float, bool]]:
        with self._lock:
            return dict(self.prom_views[-1][2]) if self.prom_views else {}

    def first_prom(self, after: float, predicate) -> tuple[float, float, dict] | None:
        """The first Prometheus view (mono, wall, view) after `after` satisfying `predicate(view)`."""
        with self._lock:
            views = list(self.prom_views)
        return next((v for v in views if v[0] >= after and predicate(v[2])), None)


# --- outputs --------------------------------------------------------------------------------------

def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def _num(x: float | None, digits: int = 3) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def write_outputs(obs: Observer, out: Path) -> list[Path]:
    """Every CSV of the module docstring, and the PNG when matplotlib is available."""
    stack = obs.stack
    files = [
        _write(out / "timeline.csv", TIMELINE_COLUMNS,
               ([wall_text(r.wall), r.node, _num(r.score), r.decision, r.binds, r.pending] for r in obs.rows)),
        _write(out / "events.csv", ("time", "event", "detail"),
               ([wall_text(m.wall), m.label, m.detail] for m in obs.marks)),
        _write(out / "decisions.csv", ("time", "replica", "node", "decision", "score", "cpu_pct", "reason"),
               ([wall_text(c.wall), f"scorer-{c.replica}", c.node, c.decision, _num(c.score), _num(c.cpu_pct),
                 c.reason or ""] for c in obs.changes)),
    ]
    if stack.api is not None:
        files.append(_write(out / "binds.csv", ("time", "namespace", "pod", "node"),
                            ([wall_text(b.wall), b.namespace, b.name, b.node] for b in stack.api.store.binds)))
    if stack.webhook is not None:
        files.append(_write(out / "admission_reviews.csv",
                            ("time", "namespace", "pod", "uid", "endpoint", "status", "allowed", "duration_ms",
                             "message", "error"),
                            ([wall_text(c.wall), c.namespace, c.name, c.uid, c.endpoint, c.status or "", c.allowed,
                              f"{c.duration_s * 1000:.1f}", c.message, c.error] for c in stack.webhook.calls)))
    png = plot(obs, out / "timeline.png")
    if png is not None:
        files.append(png)
    return files


def plot(obs: Observer, path: Path) -> Path | None:
    """timeline.png (module docstring); None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not obs.rows:
        return None
    t0 = min(r.wall for r in obs.rows)
    colors = {"node-a": "tab:red", "node-b": "tab:blue", "node-c": "tab:green"}
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(14, 8.5), dpi=100, sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    for lo, hi, color, label in ((0, 45, "#e8f5e9", "low"), (45, 55, "#fffde7", "medium-low"),
                                 (55, 60, "#fff3e0", "medium-mid"), (60, 70, "#ffe0b2", "medium-high"),
                                 (70, 100, "#ffebee", "high")):
        ax.axhspan(lo, hi, color=color, zorder=0)
        ax.text(0.002, (lo + hi) / 2, label, transform=ax.get_yaxis_transform(), fontsize=7, va="center",
                color="grey")
    for y in (45, 55, 60, 70):
        ax.axhline(y, color="grey", lw=0.6, ls=":")
    for i, node in enumerate(NODES):
        rows = [r for r in obs.rows if r.node == node]
        xs = [r.wall - t0 for r in rows]
        ax.plot(xs, [r.score if math.isfinite(r.score) else math.nan for r in rows], color=colors[node], lw=1.4,
                label=node)
        strip = 104 + i * 3  # deny spans as a strip per node above the score range
        start = None
        for r in [*rows, None]:
            denied = r is not None and r.decision != "allow"
            if denied and start is None:
                start = r.wall - t0
            elif not denied and start is not None:
                end = (r.wall - t0) if r is not None else xs[-1]
                ax.plot([start, end], [strip, strip], color=colors[node], lw=5, solid_capstyle="butt")
                start = None
        ax.text(1.001, strip, f"{node} deny", transform=ax.get_yaxis_transform(), fontsize=7, va="center",
                color=colors[node])
    if obs.stack.api is not None:
        for b in obs.stack.api.store.binds:
            rows = [r for r in obs.rows if r.node == b.node and r.wall <= b.wall]
            y = rows[-1].score if rows and math.isfinite(rows[-1].score) else 20.0
            ax.plot([b.wall - t0], [y], marker="v", ms=8, color=colors.get(b.node, "black"), mec="black", mew=0.5,
                    zorder=5)
    shown = [m for m in obs.marks if not m.label.startswith("step ")]
    for i, m in enumerate(shown):
        for a in (ax, ax2):
            a.axvline(m.wall - t0, color="black", lw=0.7, ls="--", alpha=0.6)
        ax.text(m.wall - t0, 114 + (i % 3) * 7, m.label, fontsize=7, va="bottom", ha="left",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    ax.set_ylim(0, 136)
    ax.set_yticks([0, 20, 45, 55, 60, 70, 100])
    ax.set_ylabel("fuzzy score (max over scorer replicas)")
    ax.set_title("ksense end-to-end: score per node, deny spans, binds (▼ on the node bound to)")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.78), fontsize=8)
    one = [r for r in obs.rows if r.node == NODES[0]]
    ax2.step([r.wall - t0 for r in one], [r.pending for r in one], where="post", color="black", label="pending pods")
    for node in NODES:
        rows = [r for r in obs.rows if r.node == node]
        ax2.step([r.wall - t0 for r in rows], [r.binds for r in rows], where="post", color=colors[node], lw=1,
                 label=f"pods on {node}")
    ax2.set_ylabel("pods")
    ax2.set_xlabel(f"seconds since {wall_text(t0)}")
    ax2.legend(loc="upper left", fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
