"""The [escalation] table: defaults, targets, and errors that name the file and key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from razard.config import parse_config
from razard.errors import ConfigError

SRC = Path("/etc/razard/razard.toml")


def parse(esc: dict[str, Any]) -> Any:
    return parse_config({"escalation": esc}, SRC, env={}).escalation


def problems(esc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        parse(esc)
    return str(e.value)


def test_no_table_means_no_notifier() -> None:
    """Without [escalation] razard runs no notifier."""
    assert not parse_config({}, SRC, env={}).escalation.enabled


def test_a_table_enables_it_with_defaults_and_targets() -> None:
    """Targets are optional; a token comes by variable name or file, relative to the config."""
    cfg = parse(
        {
            "threshold": 3,
            "window": 60,
            "alertmanager": {"url": "http://127.0.0.1:9093", "token_env": "AM_TOKEN"},
            "operator": {"url": "http://127.0.0.1:8080", "token_file": "op.token", "agent": "x"},
        }
    )
    assert cfg.enabled and (cfg.threshold, cfg.window, cfg.repeat_interval) == (3, 60.0, 3600.0)
    am, op = cfg.targets
    assert (am.kind, am.token_env, am.token_file) == ("alertmanager", "AM_TOKEN", None)
    assert (op.kind, op.token_file, op.agent, op.operator) == (
        "operator",
        Path("/etc/razard/op.token"),
        "x",
        "razar",
    )


def test_a_token_in_the_file_is_refused_without_echoing_it() -> None:
    """`token = ...` is an error naming the key, and the message does not repeat the secret."""
    text = problems({"webhook": {"url": "https://h.example/x", "token": "s3cr3t-value"}})
    assert "escalation.webhook.token" in text and "token_env" in text
    assert "s3cr3t-value" not in text
    text = problems({"webhook": {"url": "https://user:s3cr3t@h.example/x"}})
    assert "escalation.webhook.url" in text and "credentials" in text


def test_every_mistake_names_its_key() -> None:
    """Bad values and unknown keys are reported together, each with file and dotted key."""
    text = problems(
        {
            "threshold": 0,
            "window": "5m",
            "retry_base": 10.0,
            "retry_cap": 1.0,
            "colour": "red",
            "journal_args": ["--directory=/x", "bad"],
            "operator": {"url": "ftp://x", "token_env": "1BAD"},
            "alertmanager": {"url": "http://h", "token_env": "A", "token_file": "/t"},
            "webhook": {"url": "http://h", "token_file": "~nosuchuser-razar/t"},
        }
    )
    for key in (
        "escalation.threshold",
        "escalation.window",
        "escalation.retry_cap",
        "escalation.colour",
        "escalation.journal_args",
        "escalation.operator.url",
        "escalation.operator.token_env",
        "escalation.alertmanager: set token_env or token_file, not both",
        "escalation.webhook.token_file: cannot expand '~nosuchuser-razar/t'",
    ):
        assert f"{SRC}: {key}" in text


def test_the_example_in_config_razard_toml_parses() -> None:
    """The commented [escalation] example, uncommented, is a valid table."""
    text = Path(__file__).parents[2].joinpath("config", "razard.toml").read_text()
    start = text.index("# [escalation]")
    lines = [line[2:] for line in text[start:].splitlines() if line.startswith("# ")]
    lines = [line for line in lines if not line.startswith("# ")]
    esc = tomllib.loads("\n".join(lines))["escalation"]
    cfg = parse(esc)
    assert [t.kind for t in cfg.targets] == ["alertmanager", "operator", "webhook"]
