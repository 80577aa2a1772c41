"""The scorer's embedded single-machine source: scrape one exporter's /metrics directly.

No Prometheus in between (docs/design.md#scorer-inputs, the `make run` default): one GET per tick, parsed with
prometheus_client's text parser, reduced to the same signals as the Prometheus source and
turned into NodeInputs by scorer/core/inputs.py, so both sources mean the same thing by every
input. The exposition carries no timestamps: every value is as fresh as the scrape (the
exporter omits a value it does not have, so absence, not age, is what marks it missing).

The same scrape carries the exporter's per-pod counters (docs/metrics.md#per-pod-metrics): the
top victim, aggressor and IO aggressor of a deny's reason are their rates over the last minute
of this source's own scrapes (scorer/core/inputs.py PodRates), as the Prometheus source asks
Prometheus for them, so nothing is named until a second scrape.

A failed scrape never raises: it is counted by short reason (`unreachable`, `timeout`,
`http_503`, `bad_response`) and the nodes seen before stay with every input missing
(`Inputs.ok=False`), so their decisions turn to deny.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import datetime
from types import MappingProxyType

import requests
from prometheus_client.parser import text_string_to_metric_families

from common import names as n
from common.http_reason import BAD_RESPONSE, failure_reason, status_reason
from scorer.core import inputs as core
from scorer.core.model import Inputs
from scorer.sources import shown

NAME = n.SCORER_SOURCE_LOCAL
DEFAULT_URL = "http://127.0.0.1:9860/metrics"

log = logging.getLogger(__name__)

# Exposition samples are as old as the scrape: age never exceeds any window.
_NEVER_STALE = math.inf


class ScrapeError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def scrape(session: requests.Session, url: str, timeout_s: float) -> str:
    """The exposition text of one GET; ScrapeError with a short reason otherwise."""
    try:
        resp = session.get(url, timeout=timeout_s)
    except requests.RequestException as exc:
        raise ScrapeError(failure_reason(exc), str(exc)) from None
    if resp.status_code != 200:
        raise ScrapeError(status_reason(resp.status_code), resp.text[:200])
    return resp.text


def parse(text: str) -> list:
    """Every sample of an exposition; ScrapeError(bad_response) when it does not parse."""
    try:
        return [s for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, TypeError, IndexError) as exc:
        raise ScrapeError(BAD_RESPONSE, str(exc)) from None


class LocalSource:
    """`InputSource` over one exporter's /metrics; see the module docstring. `inputs`: the
    optional inputs to read (RuleBase.inputs); the scrape carries them anyway."""

    name = NAME
    provides = frozenset(n.OPTIONAL_INPUTS)

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 1.0,
        session: requests.Session | None = None,
        inputs: Iterable[str] = (),
    ):
        self.url = url
        self._optional = tuple(inputs)
        self._timeout = timeout_s
        self._session = session if session is not None else requests.Session()
        self._known: set[str] = set()
        self._pod_rates = core.PodRates()
        self._failing: str | None = None

    def fetch(self, now: datetime) -> Inputs:
        at = now.timestamp()
        try:
            samples = parse(scrape(self._session, self.url, self._timeout))
        except ScrapeError as exc:
            self._note_outage(exc.reason)
            reason = shown(exc.reason, "exporter")
            failed = dict.fromkeys((*core.SIGNALS, *self._optional), reason)
            nodes = core.build({}, failed, now=at, long_win_s=_NEVER_STALE, known=self._known, optional=self._optional)
            errors = MappingProxyType({exc.reason: 1})
            return Inputs(time=now, source=NAME, nodes=MappingProxyType(nodes), errors=errors, ok=False)
        self._note_outage(None)
        vectors = core.vectors_from_exposition(samples, at)
        pods = self._pod_rates.add(at, core.pod_counters(samples))
        for vector in vectors.values():
            self._known.update(vector)
        nodes = core.build(vectors, {}, now=at, long_win_s=_NEVER_STALE, known=self._known, optional=self._optional,
                           pods=pods)
        return Inputs(time=now, source=NAME, nodes=MappingProxyType(nodes))

    def _note_outage(self, reason: str | None) -> None:
        """One log line when the exporter stops answering and one when it is back."""
        if reason is not None and self._failing is None:
            log.warning("event=exporter_unavailable url=%s reason=%s", self.url, reason)
        elif reason is None and self._failing is not None:
            log.info("event=exporter_recovered url=%s", self.url)
        self._failing = reason

