"""The per-node admission decision: time-driven hysteresis over fuzzy scores (docs/design.md#decisions).

A score alone flaps around its thresholds; a node should be admitted again only after it has
looked good for a while and denied only after it has looked bad for a while, unless it is
plainly overloaded. This is that state machine, advanced once per evaluation tick (never per
HTTP request, the prototype's mistake), pure so that the live tick, the replay tool and the
restart rebuild run the very same transitions.

`step` and `missing` are the transitions of one node, written as the table of docs/design.md#decisions; `advance`
applies them to every node of a tick at once over numpy columns (a property test holds it
equal to the scalar transitions), and `States` keeps a tick's states in those columns, so a
5,000-node cluster's tick does no per-node state bookkeeping in Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from common.names import DECISION_ALLOW, DECISION_DENY, LEVEL_HIGH, LEVEL_MEDIUM, MEDIUM_LOW_UPPER, MEDIUM_MID_UPPER

MEDIUM_LOW = "medium-low"
MEDIUM_MID = "medium-mid"
MEDIUM_HIGH = "medium-high"


@dataclass(frozen=True)
class DecisionParams:
    """The hysteresis knobs; invalid values raise ValueError listing every problem.

    good_threshold: G, consecutive good ticks (low or medium-low) before a denied node is
        allowed again (FUZZY_GOOD_THRESHOLD; 2 = one tick of noise does not re-admit).
    medium_low_upper: lo, medium scores below it count as good (FUZZY_MEDIUM_LOW_UPPER).
    medium_mid_upper: mid, medium scores from lo up to it hold the last decision, from it up
        to 70 count as bad (FUZZY_MEDIUM_MID_UPPER).
    medium_bad_threshold: B, consecutive medium-high ticks before an allowed node is denied
        (FUZZY_MEDIUM_BAD_THRESHOLD).
    allow_on_missing: missing friction/energy count as 0 instead of denying the node
        (FUZZY_ALLOW_ON_MISSING; off, because a node that cannot be measured is not known good).
    """

    good_threshold: int = 2
    medium_low_upper: float = MEDIUM_LOW_UPPER
    medium_mid_upper: float = MEDIUM_MID_UPPER
    medium_bad_threshold: int = 2
    allow_on_missing: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("good_threshold", "medium_bad_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer ≥ 1, got {value!r}")
        lo, mid = self.medium_low_upper, self.medium_mid_upper
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, mid))
        if not (numbers and LEVEL_MEDIUM <= lo <= mid <= LEVEL_HIGH):
            problems.append(
                f"need {LEVEL_MEDIUM:g} ≤ medium_low_upper ≤ medium_mid_upper ≤ {LEVEL_HIGH:g}, got {lo!r}, {mid!r}"
            )
        if problems:
            raise ValueError("; ".join(problems))


def params_for(from_rules: Mapping[str, float], configured: Mapping[str, object]) -> DecisionParams:
    """The decision knobs in force: DecisionParams' defaults, replaced by a rule file's
    `decision` section, replaced by explicitly configured values (None = not configured).
    ValueError, as DecisionParams, when the result is inconsistent."""
    chosen: dict[str, Any] = {**from_rules, **{k: v for k, v in configured.items() if v is not None}}
    return DecisionParams(**chosen)


class NodeState(NamedTuple):
    """One node's hysteresis state; a node seen for the first time starts from NodeState()."""

    bad: int = 0
    good: int = 0
    last: str = DECISION_ALLOW


_INITIAL = NodeState()


class States(Mapping[str, NodeState]):
    """Every node's state after one tick, as columns over the nodes in name order; reads as a
    Mapping node -> NodeState. Immutable: `advance` returns new columns."""

    __slots__ = ("_index", "allow", "bad", "good", "names")

    def __init__(self, names: Sequence[str], bad: NDArray[np.int64], good: NDArray[np.int64],
                 allow: NDArray[np.bool_]) -> None:
        self.names = tuple(names)
        self.bad, self.good, self.allow = bad, good, allow
        for column in (bad, good, allow):
            column.flags.writeable = False
        self._index: dict[str, int] | None = None

    @classmethod
    def of(cls, states: Mapping[str, NodeState], names: Sequence[str]) -> States:
        """The states of `names` (in that order) from any mapping; a node it lacks starts from
        NodeState(). Free when `states` already holds exactly these names (every steady tick)."""
        if isinstance(states, States) and states.names == tuple(names):
            return states
        rows = [states.get(name, _INITIAL) for name in names]
        return cls(names, np.fromiter((r.bad for r in rows), np.int64, len(rows)),
                   np.fromiter((r.good for r in rows), np.int64, len(rows)),
                   np.fromiter((r.last == DECISION_ALLOW for r in rows), np.bool_, len(rows)))

    def __getitem__(self, name: str) -> NodeState:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        i = self._index[name]
        return NodeState(int(self.bad[i]), int(self.good[i]), DECISION_ALLOW if self.allow[i] else DECISION_DENY)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def medium_band(score: float, params: DecisionParams) -> str | None:
    """The medium band of a score, None outside medium (score < 45 or ≥ 70):

        medium-low   45 ≤ score < lo
        medium-mid   lo ≤ score < mid
        medium-high  mid ≤ score < 70
    """
    if not LEVEL_MEDIUM <= score < LEVEL_HIGH:
        return None
    if score < params.medium_low_upper:
        return MEDIUM_LOW
    if score < params.medium_mid_upper:
        return MEDIUM_MID
    return MEDIUM_HIGH


def medium_bands(scores: NDArray[np.float64], params: DecisionParams) -> list[str | None]:
    """`medium_band` of each score, for a whole tick at once."""
    medium = (scores >= LEVEL_MEDIUM) & (scores < LEVEL_HIGH)
    index = medium * (1 + (scores >= params.medium_low_upper) + (scores >= params.medium_mid_upper))
    return [_BANDS[i] for i in index.tolist()]


_BANDS = (None, MEDIUM_LOW, MEDIUM_MID, MEDIUM_HIGH)


def step(state: NodeState, score: float, params: DecisionParams) -> tuple[NodeState, str]:
    """One tick of a node whose inputs are present (docs/design.md#decisions table, G = good_threshold,
    B = medium_bad_threshold, lo / mid = the medium band bounds):

        score ≥ 70          bad = B, good = 0             deny
        score < lo          good += 1, bad = 0            allow if good ≥ G else last
        lo ≤ score < mid    unchanged                     last
        mid ≤ score < 70    bad += 1, good = 0            deny if bad ≥ B else last

    (score < lo covers the low band and medium-low.) Then last = the decision.
    """
    if not math.isfinite(score):
        raise ValueError(f"score must be finite, got {score!r}")
    bad, good, decision = state.bad, state.good, state.last
    if score >= LEVEL_HIGH:
        bad, good, decision = params.medium_bad_threshold, 0, DECISION_DENY
    elif score < params.medium_low_upper:
        good, bad = good + 1, 0
        if good >= params.good_threshold:
            decision = DECISION_ALLOW
    elif score >= params.medium_mid_upper:
        bad, good = bad + 1, 0
        if bad >= params.medium_bad_threshold:
            decision = DECISION_DENY
    return NodeState(bad, good, decision), decision


def missing(state: NodeState) -> tuple[NodeState, str]:
    """One tick of a node missing a critical input (friction or energy, allow_on_missing off):

        good = 0, bad unchanged, deny

    docs/design.md resets only `good`. `bad` is kept because its value cannot change a later
    decision: after this tick last = deny, and the only way back to allow (good ≥ G in the
    low bands) sets bad = 0 first, while medium-high ticks in between deny either way.
    """
    return NodeState(bad=state.bad, good=0, last=DECISION_DENY), DECISION_DENY


def advance(states: States, scores: NDArray[np.float64], scored: NDArray[np.bool_], params: DecisionParams) -> States:
    """One tick of every node of `states`: `step` with its score where `scored`, else `missing`
    (the score is then ignored). Equal, node for node, to those transitions in a loop."""
    if not np.isfinite(scores[scored]).all():
        raise ValueError("scores of scored nodes must be finite")
    high = scored & (scores >= LEVEL_HIGH)
    low = scored & (scores < params.medium_low_upper)
    medium_high = scored & ~high & ~low & (scores >= params.medium_mid_upper)
    good = np.where(low, states.good + 1, np.where(scored & ~high & ~medium_high, states.good, 0))
    bad = np.where(high, params.medium_bad_threshold,
                   np.where(low, 0, states.bad + medium_high))
    allow = states.allow & scored & ~high & ~(medium_high & (bad >= params.medium_bad_threshold))
    allow |= low & (good >= params.good_threshold)
    return States(states.names, bad, good, allow)
