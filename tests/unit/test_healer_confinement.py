"""The transient unit each healer runs in: only its layer's privileges."""

from __future__ import annotations

from pathlib import Path

from agents.confinement import capability_mask, properties, unit_name


def props(layer: str, **kw: object) -> dict[str, object]:
    args: dict[str, object] = {
        "output": Path("/run/razard/heal/x.out"),
        "writable": [Path("/var/lib/razard")],
        "timeout": 300.0,
        "privileged": True,
    }
    args.update(kw)
    made = properties(layer, ["/bin/heal", "-x"], {"A": "1"}, **args)  # type: ignore[arg-type]
    return {name: value for name, _sig, value in made}


def test_layers_get_only_the_capabilities_they_need() -> None:
    """root may configure links and enter namespaces, sacral may reset GPUs, the rest none."""
    assert props("root")["CapabilityBoundingSet"] == capability_mask(
        ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN"]
    )
    assert props("sacral")["CapabilityBoundingSet"] == capability_mask(
        ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"]
    )
    for layer in ("solar_plexus", "heart", "throat", "third_eye", "crown"):
        assert props(layer)["CapabilityBoundingSet"] == 0


def test_every_healer_is_read_only_but_its_state_and_output() -> None:
    """ProtectSystem=strict with the state dir and the output dir writable, no new privileges,
    its JSON to a file, and the healer timeout as the unit's own."""
    p = props("heart")
    assert p["ProtectSystem"] == "strict" and p["NoNewPrivileges"] is True
    assert p["ReadWritePaths"] == ["/var/lib/razard", "/run/razard/heal"]
    assert p["StandardOutputFileToTruncate"] == "/run/razard/heal/x.out"
    assert p["TimeoutStartUSec"] == 300_000_000
    assert p["Type"] == "oneshot"
    assert p["ExecStart"] == [("/bin/heal", ["/bin/heal", "-x"], False)]
    assert p["Environment"] == ["A=1"]
    assert p["PrivateTmp"] is True and p["ProtectControlGroups"] is True


def test_private_tmp_is_left_out_where_it_would_hide_what_the_healer_needs() -> None:
    """A state dir or interpreter under /tmp (tests, checkouts) would vanish behind PrivateTmp;
    root and sacral never get it; root keeps /run/netns visible (no ProtectControlGroups)."""
    assert "PrivateTmp" not in props("heart", writable=[Path("/tmp/t/state")])
    assert "PrivateTmp" not in props("heart", readable=[Path("/tmp/co/.venv/bin/python")])
    assert "PrivateTmp" not in props("root")
    assert "ProtectControlGroups" not in props("root")
    assert "ProtectKernelModules" not in props("sacral")


def test_an_unprivileged_manager_gets_no_namespace_settings() -> None:
    """A user manager that is not root cannot drop capabilities or build mount namespaces."""
    p = props("heart", privileged=False)
    assert p["NoNewPrivileges"] is True
    assert "CapabilityBoundingSet" not in p and "ProtectSystem" not in p


def test_unit_names_say_the_layer() -> None:
    """Healer units are found with `systemctl list-units 'razar-heal-*'`."""
    assert unit_name("solar_plexus", "ab12") == "razar-heal-solar-plexus-ab12.service"
