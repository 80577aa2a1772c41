"""SchedulerConfig from env + flags: defaults, flags win, every problem reported at once."""

from __future__ import annotations

import dataclasses

import pytest

from common.envconf import ConfigError
from scheduler.config import SchedulerConfig, build_parser, from_env

PROM = {"KSENSE_PROMETHEUS_URL": "http://prometheus:9090/"}


def test_defaults_are_the_contract() -> None:
    cfg = from_env(PROM)
    assert (cfg.scheduler_name, cfg.poll_s, cfg.max_per_cycle, cfg.placement_delay_s) == ("fuzzy-scheduler", 10.0, 1,
                                                                                          5.0)
    assert (cfg.score_source, cfg.prometheus_url, cfg.long_win_s) == ("prometheus", "http://prometheus:9090", 60.0)
    assert cfg.scorer_url == "https://ksense-scorer.ksense.svc:8443" and cfg.scorer_ca_file is None
    assert (cfg.namespace, cfg.metrics_port, cfg.lease_duration_s) == ("ksense", 9862, 15.0)
    assert cfg.identity and cfg.identity != from_env(PROM).identity, "unique per process"


def test_every_default_comes_from_the_dataclass() -> None:
    """Nothing retypes a default: with no settings, every field but the derived ones is the dataclass's."""
    cfg = from_env(PROM)
    derived = {"prometheus_url", "identity"}
    for f in dataclasses.fields(SchedulerConfig):
        if f.name not in derived:
            assert getattr(cfg, f.name) == f.default, f.name
    helps = {a.dest: str(a.help) for a in build_parser()._actions}
    assert f"{SchedulerConfig.poll_s:g})" in helps["poll"]
    assert f"{SchedulerConfig.metrics_port})" in helps["metrics_port"]


def test_env_and_flags() -> None:
    env = {**PROM, "FUZZY_SCHEDULER_NAME": "mine", "FUZZY_SCHEDULER_POLL_S": "0", "FUZZY_SCHEDULER_MAX_PER_CYCLE": "0",
           "FUZZY_SCHEDULER_PLACEMENT_DELAY_S": "0", "POD_NAMESPACE": "sched", "POD_NAME": "sched-0",
           "KSENSE_SCHEDULER_METRICS_PORT": "19862"}
    cfg = from_env(env)
    assert (cfg.scheduler_name, cfg.poll_s, cfg.max_per_cycle, cfg.placement_delay_s) == ("mine", 0.0, 0, 0.0)
    assert cfg.namespace == "sched" and cfg.identity.startswith("sched-0_") and cfg.metrics_port == 19862
    args = build_parser().parse_args(["--scheduler-name", "flag", "--identity", "me", "--score-source", "scorer",
                                      "--namespace", "ns"])
    cfg = from_env(env, args)
    assert (cfg.scheduler_name, cfg.identity, cfg.score_source, cfg.namespace) == ("flag", "me", "scorer", "ns")


def test_all_problems_at_once(tmp_path) -> None:
    env = {"FUZZY_SCHEDULER_POLL_S": "-1", "FUZZY_SCHEDULER_MAX_PER_CYCLE": "1.5", "FUZZY_SCORE_SOURCE": "prometheus",
           "FUZZY_LONG_WIN_S": "abc", "KUBECONFIG": str(tmp_path / "missing"), "FUZZY_SCORER_URL": "ftp://x"}
    args = build_parser().parse_args(["--lease-duration", "2", "--renew-deadline", "5"])
    with pytest.raises(ConfigError) as exc:
        from_env(env, args)
    text = "\n".join(exc.value.problems)
    for fragment in ("FUZZY_SCHEDULER_POLL_S", "FUZZY_SCHEDULER_MAX_PER_CYCLE", "KSENSE_PROMETHEUS_URL: required",
                     "FUZZY_LONG_WIN_S", "KUBECONFIG", "FUZZY_SCORER_URL", "leader election"):
        assert fragment in text, fragment
    assert len(exc.value.problems) == 7


def test_scorer_source_needs_no_prometheus_and_checks_the_ca_file(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    args = build_parser().parse_args(["--scorer-ca-file", str(ca)])
    cfg = from_env({"FUZZY_SCORE_SOURCE": "scorer", "FUZZY_SCORER_URL": "https://scorer:8443/"}, args)
    assert cfg.scorer_url == "https://scorer:8443" and cfg.scorer_ca_file == ca
    with pytest.raises(ConfigError, match="no such file"):
        from_env({"FUZZY_SCORE_SOURCE": "scorer"}, build_parser().parse_args(["--scorer-ca-file", "/nope"]))
