"""ScorerConfig: docs/configuration.md defaults, flags over env, every problem reported together."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.envconf import ConfigError
from scorer import config
from scorer.sources.prometheus import QUERY_CONCURRENCY, PrometheusSource


def parse(env, argv=()):
    return config.from_env(env, config.build_parser().parse_args(list(argv)))


def test_defaults_follow_the_contract():
    cfg = parse({})
    assert cfg.prometheus_url is None and cfg.exporter_url == "http://127.0.0.1:9860/metrics"
    assert (cfg.interval_s, cfg.replay_s, cfg.long_win_s) == (1.0, 300.0, 60.0)
    assert (cfg.webhook_host, cfg.webhook_port, cfg.metrics_port) == ("0.0.0.0", 8443, 9861)
    # Unset: the rule file's decision section, else DecisionParams' defaults (params_for).
    assert (cfg.good_threshold, cfg.medium_low_upper, cfg.medium_mid_upper, cfg.medium_bad_threshold) == (
        None, None, None, None)
    assert cfg.allow_on_missing is False and cfg.tls_cert is None and cfg.rules_file is None
    assert cfg.monitor_csv == Path("/tmp/ksense/fuzzy_monitor.csv")
    assert cfg.score_csv == Path("/tmp/ksense/fuzzy_score.csv")
    assert cfg.query_concurrency is None  # the source's own default, stated once:
    assert PrometheusSource("http://prom:9090")._concurrency == QUERY_CONCURRENCY == 4  # as docs/configuration.md


def test_env_and_flags():
    env = {"KSENSE_PROMETHEUS_URL": "http://prom:9090/", "FUZZY_ALLOW_ON_MISSING": "true",
           "FUZZY_GOOD_THRESHOLD": "3", "FUZZY_WEBHOOK_PORT": "9443"}
    cfg = parse({**env, "KSENSE_SCORER_QUERY_CONCURRENCY": "2"})
    assert cfg.prometheus_url == "http://prom:9090" and cfg.allow_on_missing and cfg.good_threshold == 3
    assert cfg.query_concurrency == 2
    assert cfg.webhook_port == 9443
    cfg = parse(env, ["--prometheus-url", "https://thanos:10902", "--port", "1", "--no-csv"])
    assert cfg.prometheus_url == "https://thanos:10902" and cfg.webhook_port == 1
    assert cfg.monitor_csv is None and cfg.score_csv is None


def test_all_problems_together(tmp_path):
    env = {
        "FUZZY_ALLOW_ON_MISSING": "maybe",
        "FUZZY_MEDIUM_LOW_UPPER": "65",
        "FUZZY_MEDIUM_MID_UPPER": "50",
        "FUZZY_TLS_CERT": str(tmp_path / "cert.pem"),
        "KSENSE_PROMETHEUS_URL": "prom:9090",
        "FUZZY_GOOD_THRESHOLD": "0",
        "KSENSE_SCORER_QUERY_CONCURRENCY": "0",
    }
    with pytest.raises(ConfigError) as err:
        parse(env)
    text = str(err.value)
    for needle in ("FUZZY_ALLOW_ON_MISSING", "must not exceed", "set both", "no such file",
                   "KSENSE_PROMETHEUS_URL", "FUZZY_GOOD_THRESHOLD", "KSENSE_SCORER_QUERY_CONCURRENCY"):
        assert needle in text


def test_the_exporter_selector_defaults_to_the_deploy_scrape_identity_and_is_checked():
    assert parse({}).exporter_selector == 'job="ksense-exporter",namespace="ksense"'
    assert parse({"KSENSE_EXPORTER_SELECTOR": 'job="a", node!~"x.*"'}).exporter_selector == 'job="a",node!~"x.*"'
    assert parse({"KSENSE_EXPORTER_SELECTOR": "job='x'"}, ["--exporter-selector", 'job="y"']).exporter_selector == \
        'job="y"'
    assert parse({"KSENSE_EXPORTER_SELECTOR": ""}).exporter_selector == ""  # explicit: any publisher
    for bad in ('job="a"} or on() vector(0) or x{y="z"', "job", 'job="a" namespace="b"', 'job="unterminated'):
        with pytest.raises(ConfigError, match="KSENSE_EXPORTER_SELECTOR"):
            parse({"KSENSE_EXPORTER_SELECTOR": bad})
