"""The end-of-run secret search finds a planted token and skips the files meant to hold one."""

from __future__ import annotations

from pathlib import Path

from tests import canary


def test_a_token_in_a_log_is_found_and_a_token_file_is_not(tmp_path: Path) -> None:
    """A canary in razar.log or state is a hit; the token file it came from is not."""
    # a prefix of its own: a real canary left in tmp_path would fail this very run
    prefix = "rzplanted"
    secret = f"{prefix}-0123456789"
    state = tmp_path / "state"
    state.mkdir()
    (state / "razar.log").write_text('{"message": "ok"}\n')
    (state / "k2.token").write_text(secret)
    assert canary.leaks_in_files([tmp_path], prefix) == []
    (state / "razar_ai_invocations.json").write_text(f'{{"auth": "Bearer {secret}"}}\n')
    assert canary.leaks_in_files([tmp_path], prefix) == [str(state / "razar_ai_invocations.json")]


def test_every_harness_token_is_a_canary() -> None:
    """The tokens razard gets in the integration tests are all recognisable."""
    assert set(canary.TOKENS) >= {"RSTAR_TOKEN", "KIMI_K2_TOKEN"}
    assert all(v.startswith(canary.PREFIX) for v in canary.TOKENS.values())
