"""ExporterConfig: env + flags, every error reported together, typos warned about."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import config


def parse(env, argv=()):
    return config.from_env(env, config.build_parser("test").parse_args(list(argv)))


def test_defaults_follow_the_contract():
    cfg = parse({"KSENSE_NODE_NAME": "n1"})
    assert (cfg.node, cfg.source, cfg.port, cfg.interval_s) == ("n1", "auto", 9860, 1.0)
    assert (cfg.warmup_s, cfg.baseline_win, cfg.baseline_min_count) == (600.0, 300, 50)
    assert cfg.csv_path == Path("/tmp/ksense/kernel_metrics.csv")
    assert (cfg.csv_max_bytes, cfg.csv_keep) == (67108864, 5)
    assert cfg.state_dir == Path("/var/lib/ksense/state") and cfg.baseline_max_age_s == 86400.0
    assert cfg.proc_root == Path("/proc")
    assert (cfg.run_as, cfg.max_requests) == ((65534, 65534), 8)


def test_node_name_falls_back_to_downward_api_then_hostname():
    assert parse({"NODE_NAME": "from-downward-api"}).node == "from-downward-api"
    assert parse({"KSENSE_NODE_NAME": "a", "NODE_NAME": "b"}).node == "a"
    assert parse({}).node  # hostname


def test_env_is_honoured_and_flags_override_it():
    env = {"KSENSE_METRICS_CSV": "/data/k.csv", "KSENSE_EXPORTER_PORT": "9999", "KSENSE_SOURCE": "procfs"}
    cfg = parse(env)
    assert (cfg.csv_path, cfg.port, cfg.source) == (Path("/data/k.csv"), 9999, "procfs")
    cfg = parse(env, ["--csv", "/x.csv", "--port", "1234", "--source", "replay:/r.csv", "--speed", "50"])
    assert (cfg.csv_path, cfg.port, cfg.source, cfg.replay_file, cfg.speed) == (
        Path("/x.csv"),
        1234,
        "replay",
        Path("/r.csv"),
        50.0,
    )
    assert parse(env, ["--no-csv"]).csv_path is None


def test_all_errors_are_reported_together():
    env = {
        "KSENSE_INTERVAL_S": "fast",
        "KSENSE_EXPORTER_PORT": "70000",
        "KSENSE_SOURCE": "kprobe",
        "KSENSE_CSV_KEEP": "0",
        "KSENSE_BPF_MAP_ENTRIES": "1000",
    }
    with pytest.raises(config.ConfigError) as err:
        parse(env)
    text = str(err.value)
    for name in (
        "KSENSE_INTERVAL_S",
        "KSENSE_EXPORTER_PORT",
        "KSENSE_SOURCE",
        "KSENSE_CSV_KEEP",
        "KSENSE_BPF_MAP_ENTRIES",
    ):
        assert name in text
    assert len(err.value.problems) == 5


def test_unknown_variables_are_typos():
    env = {"KSENSE_METRIC_CSV": "/x", "FUZZY_GOOD_TRESHOLD": "3", "KSENSE_NODE_NAME": "n", "HOME": "/root"}
    assert config.unknown_variables(env) == ["FUZZY_GOOD_TRESHOLD", "KSENSE_METRIC_CSV"]


def test_config_is_frozen():
    cfg = parse({})
    with pytest.raises(AttributeError):
        cfg.port = 1  # type: ignore[misc]


def test_run_as_and_max_requests():
    assert parse({"KSENSE_RUN_AS": "1000"}).run_as == (1000, 1000)
    assert parse({"KSENSE_RUN_AS": "1000:2000"}).run_as == (1000, 2000)
    assert parse({"KSENSE_RUN_AS": "1000"}, ["--run-as", "0"]).run_as == (0, 0)
    assert parse({}, ["--max-requests", "3"]).max_requests == 3
    with pytest.raises(config.ConfigError) as err:
        parse({"KSENSE_RUN_AS": "nobody", "KSENSE_EXPORTER_MAX_REQUESTS": "0"})
    assert len(err.value.problems) == 2
    for bad in ("1:2:3", "-1", "1:", "4294967295"):
        with pytest.raises(config.ConfigError):
            parse({"KSENSE_RUN_AS": bad})
