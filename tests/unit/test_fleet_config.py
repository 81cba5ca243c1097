"""The ``[fleet]`` table: absent means no fleet; every mistake names the file and key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from razard.config import parse_config
from razard.errors import ConfigError
from razard.fleet.config import DEFAULT_GATED, Budget

SOURCE = Path("/etc/razard/razard.toml")


def problems(fleet: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"fleet": fleet}, SOURCE, env={})
    return [str(p) for p in info.value.problems]


def test_no_fleet_table_means_no_fleet() -> None:
    cfg = parse_config({}, SOURCE, env={})
    assert not cfg.fleet.enabled and cfg.fleet.endpoints == ()


def test_a_full_table_parses_and_defaults_fill_the_rest() -> None:
    cfg = parse_config(
        {
            "fleet": {
                "endpoints": ["https://10.0.0.5:2379/", "https://10.0.0.6:2379"],
                "prefix": "/gpu-fleet/",
                "node": "gpu-07",
                "budget": "10%",
                "breaker_threshold": 4,
                "breaker_window": 900,
                "lease_ttl": 20,
                "gated": ["sacral_gpu_reset", "patch_apply"],
                "fail_open": ["patch_apply"],
                "ca_file": "etcd-ca.pem",
                "cert_file": "/etc/razard/etcd.pem",
                "key_file": "/etc/razard/etcd.key",
                "username": "razar",
                "password_file": "etcd.pw",
            }
        },
        SOURCE,
        env={},
    )
    f = cfg.fleet
    assert f.enabled
    assert f.endpoints == ("https://10.0.0.5:2379", "https://10.0.0.6:2379")
    assert (f.prefix, f.node_name, f.budget) == ("/gpu-fleet/", "gpu-07", Budget(0, 10))
    assert f.budget.slots(3) == 1 and f.budget.slots(25) == 3
    assert (f.breaker_threshold, f.breaker_window, f.lease_ttl) == (4, 900.0, 20.0)
    assert f.gated == {"sacral_gpu_reset", "patch_apply"}
    assert not f.fail_closed("patch_apply") and f.fail_closed("sacral_gpu_reset")
    assert f.ca_file == Path("/etc/razard/etcd-ca.pem")
    assert f.password_file == Path("/etc/razard/etcd.pw")


def test_defaults() -> None:
    f = parse_config({"fleet": {"endpoints": ["http://127.0.0.1:2379"]}}, SOURCE, env={}).fleet
    assert f.prefix == "/razar/" and f.budget == Budget(1) and f.gated == set(DEFAULT_GATED)
    assert f.node_name  # the host name
    assert "restart" not in f.gated


@pytest.mark.parametrize(
    ("fleet", "key", "words"),
    [
        ({}, "fleet.endpoints", "required"),
        ({"endpoints": "http://x:2379"}, "fleet.endpoints", "list"),
        ({"endpoints": ["etcd:2379"]}, "fleet.endpoints", "not an etcd client URL"),
        ({"endpoints": ["http://u:pw@x:2379"]}, "fleet.endpoints", "no credentials"),
        ({"endpoints": ["http://x:99999"]}, "fleet.endpoints", "not an etcd client URL"),
        ({"prefix": "razar"}, "fleet.prefix", "starts and ends with /"),
        ({"budget": "110%"}, "fleet.budget", "percentage"),
        ({"budget": 0}, "fleet.budget", "between 1"),
        ({"lease_ttl": 1}, "fleet.lease_ttl", ">= 2"),
        ({"gated": ["GPU reset"]}, "fleet.gated", "not an action name"),
        ({"username": "razar"}, "fleet.password_file", "go together"),
        ({"password": "hunter2"}, "fleet.password", "unknown key"),
        ({"cert_file": "c.pem"}, "fleet.cert_file", "go together"),
        ({"ca_file": "ca.pem"}, "fleet.endpoints", "https://"),
        ({"node": "a b"}, "fleet.node", "not a node name"),
    ],
)
def test_mistakes_name_the_file_and_key(fleet: dict[str, Any], key: str, words: str) -> None:
    table = {"endpoints": ["http://127.0.0.1:2379"], **fleet}
    if fleet == {}:
        table = {}
    found = problems(table)
    assert any(str(SOURCE) in p and key in p and words in p for p in found), found


def test_a_password_in_the_file_is_never_echoed() -> None:
    found = problems({"endpoints": ["http://127.0.0.1:2379"], "password": "hunter2"})
    assert not any("hunter2" in p for p in found)


def test_the_example_in_config_razard_toml_parses() -> None:
    """The commented [fleet] example, uncommented, is a valid table."""
    text = Path(__file__).parents[2].joinpath("config", "razard.toml").read_text()
    block = text[text.index("# [fleet]") : text.index("# --- Operator escalation")]
    lines = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    cfg = parse_config(tomllib.loads("\n".join(lines)), SOURCE, env={}).fleet
    assert cfg.enabled and cfg.gated == set(DEFAULT_GATED) and cfg.username == "razar"
