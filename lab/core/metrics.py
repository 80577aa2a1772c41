"""Decision quality as numbers: does a deny mean the tenant hurts, and does every hurt get a deny?

Pure numpy over one recording's seconds, so the figures can be checked on synthetic series with
known answers. The vocabulary:

    hurt(t)   the tenant's p99 in second t is above the SLO (or a request was lost)
    pain(t)   hurt somewhere in [t, t + H]: a pod placed at t would suffer within the horizon
    deny(t)   the policy's decision at t

precision = P(pain | deny), recall = P(deny | pain), F1 their harmonic mean, deny share =
P(deny), flips per hour = decision changes per hour of evaluated time. A hurt *episode* is a
run of hurt seconds, runs closer than H merged; onset-to-deny is the wait from its first hurt
second to the first deny (0 when already denying), end-to-allow the wait from its last hurt
second to the first allow after it (0 when already allowing). Both are medians over episodes;
an episode never denied (or never re-allowed before the recording ends) is counted apart.
Only `evaluated` seconds count (the lab evaluates seconds with a frozen baseline).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

Bools = NDArray[np.bool_]


def hurt(p99_ms: NDArray[np.float64], errors: NDArray[np.float64], slo_ms: float) -> Bools:
    """Seconds whose p99 exceeds the SLO or that lost a request; a second without a client row
    (NaN p99, no errors) does not hurt."""
    with np.errstate(invalid="ignore"):
        return (p99_ms > slo_ms) | (np.nan_to_num(errors) > 0)


def rolling_median(values: NDArray[np.float64], window_s: int) -> NDArray[np.float64]:
    """The median of each second's centred window of `window_s` seconds (odd; 1 = unchanged),
    NaNs ignored: a one-second blip of the tenant's p99 does not survive a window of 3 or more,
    a sustained rise does."""
    if window_s <= 1:
        return values
    if window_s % 2 == 0:
        raise ValueError(f"the smoothing window must be odd, got {window_s}")
    half = window_s // 2
    padded = np.concatenate([np.full(half, np.nan), values, np.full(half, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window_s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        smoothed: NDArray[np.float64] = np.nanmedian(windows, axis=1)
    return smoothed


def pain(hurt_s: Bools, horizon_s: int) -> Bools:
    """pain[t] = any(hurt[t : t + horizon_s + 1]) (the window is cut at the end)."""
    n = len(hurt_s)
    counts = np.concatenate([[0], np.cumsum(hurt_s, dtype=np.int64)])
    ends = np.minimum(np.arange(n) + horizon_s + 1, n)
    hurt: Bools = (counts[ends] - counts[:n]) > 0
    return hurt


def episodes(hurt_s: Bools, merge_gap_s: int) -> list[tuple[int, int]]:
    """(first, last) indices of hurt runs, runs separated by fewer than `merge_gap_s` calm
    seconds merged into one episode."""
    idx = np.flatnonzero(hurt_s)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) - 1 >= max(1, merge_gap_s))
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


@dataclass(frozen=True)
class Quality:
    """One policy's figures over the evaluated seconds (NaN where undefined, e.g. precision of
    a policy that never denies)."""

    seconds: int
    pain_share: float
    deny_share: float
    precision: float
    recall: float
    f1: float
    flips_per_hour: float
    onset_to_deny_s: float
    end_to_allow_s: float
    episodes: int
    episodes_never_denied: int
    episodes_never_allowed: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _median(values: list[int]) -> float:
    return float(np.median(values)) if values else math.nan


def quality(deny: Bools, hurt_s: Bools, evaluated: Bools, horizon_s: int) -> Quality:
    """The figures of one policy's decisions against one recording's hurt seconds."""
    deny, hurt_s, evaluated = (np.asarray(a, dtype=bool) for a in (deny, hurt_s, evaluated))
    if not deny.shape == hurt_s.shape == evaluated.shape:
        raise ValueError(f"deny, hurt and evaluated differ in length: {deny.shape}, {hurt_s.shape}, {evaluated.shape}")
    p = pain(hurt_s, horizon_s)
    d, p_e = deny[evaluated], p[evaluated]
    n = int(evaluated.sum())
    tp = int((d & p_e).sum())
    precision, recall = _ratio(tp, int(d.sum())), _ratio(tp, int(p_e.sum()))
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if n else math.nan)
    # Flips between consecutive evaluated seconds only (a gap is not a decision change).
    both = evaluated[1:] & evaluated[:-1]
    flips = int((deny[1:] != deny[:-1])[both].sum())
    onset, end, never_denied, never_allowed = [], [], 0, 0
    h = np.where(evaluated, hurt_s, False)
    for first, last in episodes(h, horizon_s):
        denied = np.flatnonzero(deny[first:] & evaluated[first:])
        if denied.size and denied[0] <= last - first:
            onset.append(int(denied[0]))
        else:
            never_denied += 1
        allowed = np.flatnonzero(~deny[last + 1:] & evaluated[last + 1:])
        if not deny[last]:
            end.append(0)
        elif allowed.size:
            end.append(int(allowed[0]) + 1)
        else:
            never_allowed += 1
    return Quality(
        seconds=n, pain_share=_ratio(int(p_e.sum()), n), deny_share=_ratio(int(d.sum()), n),
        precision=precision, recall=recall, f1=f1, flips_per_hour=_ratio(flips * 3600.0, n),
        onset_to_deny_s=_median(onset), end_to_allow_s=_median(end), episodes=len(onset) + never_denied,
        episodes_never_denied=never_denied, episodes_never_allowed=never_allowed,
    )


def at_prior(q: Quality, prior: float) -> tuple[float, float]:
    """(precision, F1) the policy would have where the pain share is `prior`, from its recall
    (true-deny rate) and its false-deny rate, neither of which depends on how much of the data
    is pain. Precision itself does: on a set that is 85 % pain, denying everything is 85 %
    precise; at `prior` 0.5 it is 50 % precise, and a policy must tell pain from calm to score.
    NaN when the data has no pain or no calm second."""
    if not 0 < q.pain_share < 1:
        return math.nan, math.nan
    tpr = q.recall
    fpr = max(0.0, q.deny_share - tpr * q.pain_share) / (1 - q.pain_share)
    if tpr == 0:
        return (math.nan if fpr == 0 else 0.0), 0.0
    precision = prior * tpr / (prior * tpr + (1 - prior) * fpr)
    return precision, 2 * precision * tpr / (precision + tpr)


#: Where a calm second's pain comes from, by the first hurt second in its window (calm_pain_sources).
CALM_PAIN_SOURCES = ("next phase", "after-effect", "calm blip")


def calm_pain_sources(hurt_s: Bools, calm: Bools, since_start_s: NDArray[np.int_], evaluated: Bools,
                      horizon_s: int, after_s: int = 30) -> dict[str, int]:
    """Why calm seconds count as pain. Each evaluated calm second in pain is attributed to the
    first hurt second u in its window [t, t + H]: u in a following stress phase ("next phase":
    the look-ahead reaching into the next stress), u calm within `after_s` of its phase's start
    ("after-effect" of the stress before: writeback, reclaim, a drained run queue), or u calm
    later ("calm blip": hurt with no stress running). Also counted: the evaluated calm seconds,
    those in pain, those that hurt themselves, and the calm hurt runs (with how many last one
    second): the window turns each hurt second into up to H + 1 pain seconds."""
    hurt_s, calm, evaluated = (np.asarray(a, dtype=bool) for a in (hurt_s, calm, evaluated))
    n = len(hurt_s)
    # The first hurt second at or after each t (n where none).
    nxt = np.minimum.accumulate(np.where(hurt_s, np.arange(n), n)[::-1])[::-1]
    t = np.flatnonzero(evaluated & calm & (nxt < n) & (nxt <= np.arange(n) + horizon_s))
    u = nxt[t]
    out = {"calm": int((evaluated & calm).sum()), "pain": len(t), "hurt itself": int((u == t).sum())}
    out["next phase"] = int((~calm[u]).sum())
    out["after-effect"] = int((calm[u] & (since_start_s[u] <= after_s)).sum())
    out["calm blip"] = int((calm[u] & (since_start_s[u] > after_s)).sum())
    runs = episodes(hurt_s & calm & evaluated, 1)
    out["calm hurt runs"] = len(runs)
    out["one-second runs"] = sum(a == b for a, b in runs)
    return out


def pooled(parts: list[tuple[Bools, Bools, Bools]], horizon_s: int) -> Quality:
    """The figures over several recordings at once: each (deny, hurt, evaluated) is scored on
    its own clock, then counts are pooled (concatenating with a gap so no window, flip or
    episode crosses from one recording into the next)."""
    gap = horizon_s + 2
    pad = np.zeros(gap, dtype=bool)
    deny = np.concatenate([x for d, _, _ in parts for x in (d, pad)])
    hurt_s = np.concatenate([x for _, h, _ in parts for x in (h, pad)])
    evaluated = np.concatenate([x for _, _, e in parts for x in (e, pad)])
    return quality(deny, hurt_s, evaluated, horizon_s)


def threshold_sweep(values: NDArray[np.float64], pain_s: Bools, evaluated: Bools,
                    candidates: NDArray[np.float64]) -> list[dict[str, float]]:
    """Precision, recall and F1 of `deny = value ≥ θ` for each θ in `candidates` (the sweep a
    single-threshold policy is chosen from); a NaN value never denies."""
    v, p = values[evaluated], pain_s[evaluated]
    out = []
    positives = int(p.sum())
    for theta in candidates:
        with np.errstate(invalid="ignore"):
            d = v >= theta
        tp = int((d & p).sum())
        prec, rec = _ratio(tp, int(d.sum())), _ratio(tp, positives)
        f1 = 2 * prec * rec / (prec + rec) if tp else 0.0
        out.append({"threshold": float(theta), "precision": prec, "recall": rec, "f1": f1,
                    "deny_share": _ratio(int(d.sum()), len(v))})
    return out


def best_threshold(sweep: list[dict[str, float]]) -> dict[str, float]:
    """The sweep entry with the highest F1 (the lowest threshold among ties)."""
    return max(sweep, key=lambda e: (e["f1"], -e["threshold"]))
