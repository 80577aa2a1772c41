"""Environment + flags -> typed values, shared by every component's frozen config.

docs/configuration.md: flags override environment variables, every invalid value is reported together
(one ConfigError listing them all), and unknown KSENSE_* / FUZZY_* variables are typos to warn
about. Each component's config module declares its fields; this module only reads them.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping, Sequence

#: Every variable of docs/configuration.md plus the few the project adds (documented in the README).
KNOWN_ENV = frozenset(
    {
        "KSENSE_NODE_NAME", "KSENSE_SOURCE", "KSENSE_PROC_ROOT", "KSENSE_INTERVAL_S",
        "KSENSE_WARMUP_S", "KSENSE_BASELINE_WIN_S", "KSENSE_BASELINE_MIN_COUNT",
        "KSENSE_STATE_DIR", "KSENSE_BASELINE_MAX_AGE_S", "KSENSE_METRICS_CSV",
        "KSENSE_CSV_MAX_BYTES", "KSENSE_CSV_KEEP", "KSENSE_EXPORTER_PORT", "KSENSE_EXPORTER_HOST",
        "KSENSE_EXPORTER_MAX_REQUESTS", "KSENSE_RUN_AS",
        "KSENSE_BPF_MAP_ENTRIES", "KSENSE_POD_METRICS", "KSENSE_POD_MAX",
        "KSENSE_POD_TOP_K", "KSENSE_CGROUP_ROOT",
        "KSENSE_KUBE_API", "KSENSE_KUBE_TOKEN_FILE", "KSENSE_LOG_FORMAT", "KSENSE_REQUIRE_REAL", "KSENSE_REPLAY_SPEED",
        "KSENSE_SUMMARY", "KSENSE_UPDATE_GOLDEN",
        "KSENSE_PROMETHEUS_URL", "KSENSE_EXPORTER_URL", "KSENSE_SCORER_INTERVAL_S",
        "KSENSE_SCORER_REPLAY_S", "KSENSE_SCORER_QUERY_CONCURRENCY", "KSENSE_SCORER_METRICS_PORT",
        "KSENSE_SCHEDULER_METRICS_PORT",
        "FUZZY_WEBHOOK_HOST", "FUZZY_WEBHOOK_PORT", "FUZZY_TLS_CERT", "FUZZY_TLS_KEY",
        "FUZZY_LONG_WIN_S", "FUZZY_ALLOW_ON_MISSING", "FUZZY_GOOD_THRESHOLD",
        "FUZZY_MEDIUM_LOW_UPPER", "FUZZY_MEDIUM_MID_UPPER", "FUZZY_MEDIUM_BAD_THRESHOLD",
        "FUZZY_MONITOR_CSV", "FUZZY_SCORE_CSV", "FUZZY_RULES_FILE", "FUZZY_SCHEDULER_NAME",
        "FUZZY_SCHEDULER_POLL_S", "FUZZY_SCHEDULER_MAX_PER_CYCLE",
        "FUZZY_SCHEDULER_PLACEMENT_DELAY_S", "FUZZY_SCORE_SOURCE", "FUZZY_SCORER_URL",
        "KSENSE_EXPORTER_SELECTOR", "KSENSE_SCORER_SELECTOR",
    }
)


#: One PromQL label matcher: a label name, an operator, a quoted string (any of PromQL's quotes).
_MATCHER = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*"""
)


def label_matchers(text: str) -> str:
    """`text` as PromQL label matchers to put inside a selector's braces (`job="a",namespace="b"`),
    normalised (no spaces, no trailing comma); "" for none. ValueError when it is anything else,
    so a typo cannot inject PromQL into every query."""
    matchers, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _MATCHER.match(text, pos)
        if m is None:
            raise ValueError(f"not a PromQL label matcher at {text[pos:]!r} (expected name=\"value\", ...)")
        matchers.append("".join(m.groups()))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError(f"expected ',' between label matchers at {text[pos:]!r}")
            pos += 1
    return ",".join(matchers)


class ConfigError(ValueError):
    """All invalid settings at once, one per line."""

    def __init__(self, problems: Sequence[str]):
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = tuple(problems)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """KSENSE_* / FUZZY_* variables nobody reads: almost always typos."""
    return sorted(k for k in environ if k.startswith(("KSENSE_", "FUZZY_")) and k not in KNOWN_ENV)


class EnvReader:
    """Reads one value at a time (flag, else variable, else default), collecting problems."""

    def __init__(self, environ: Mapping[str, str], args: argparse.Namespace | None = None):
        self._env = environ
        self._args = vars(args) if args is not None else {}
        self.problems: list[str] = []

    def flag(self, name: str):
        return self._args.get(name)

    def text(self, flag: str, env: str, default: str | None) -> str | None:
        value = self._args.get(flag) if flag else None
        if value is not None:
            return value
        return self._env.get(env, default)

    def number(
        self,
        flag: str,
        env: str,
        default: float | None,
        *,
        minimum: float,
        maximum: float = math.inf,
        integer: bool = False,
    ):
        text = self.text(flag, env, None)
        if text is None or text == "":
            return default
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            self.problems.append(f"{env}={text!r}: not {'an integer' if integer else 'a number'}")
            return default
        if not math.isfinite(value) or value < minimum or value > maximum:
            bounds = f"≥ {minimum}" if maximum == math.inf else f"between {minimum} and {maximum}"
            self.problems.append(f"{env}={text!r}: must be {bounds}")
            return default
        return value

    def boolean(self, flag: str, env: str, default: bool) -> bool:
        value = self._args.get(flag) if flag else None
        if isinstance(value, bool):
            return value
        text = self._env.get(env)
        if text is None or text == "":
            return default
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        self.problems.append(f"{env}={text!r}: expected true or false")
        return default

    def choice(self, flag: str, env: str, default: str, allowed: Sequence[str]) -> str:
        text = self.text(flag, env, default) or default
        if text not in allowed:
            self.problems.append(f"{env}={text!r}: expected one of {', '.join(allowed)}")
            return default
        return text

    def matchers(self, flag: str, env: str, default: str) -> str:
        """PromQL label matchers (see `label_matchers`); set but empty means none."""
        text = self.text(flag, env, default)
        try:
            return label_matchers(text or "")
        except ValueError as exc:
            self.problems.append(f"{env}={text!r}: {exc}")
            return default

    def check(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)
