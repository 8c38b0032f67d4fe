"""Settings from the environment: every bad value names its variable."""

from __future__ import annotations

import pytest

from felix.settings import ENVIRONMENT, Settings, SettingsError


def test_defaults_match_the_contract() -> None:
    settings = Settings()
    assert settings.max_event_bytes == 64 * 1024
    assert settings.max_batch_events == 1000
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.max_client_frame_bytes == 64 * 1024
    assert settings.history_size == 1000
    assert settings.retention_seconds == 3600
    assert settings.dev_mode


def test_from_env_reads_every_kind() -> None:
    settings = Settings.from_env(
        {
            "FELIX_API_KEY": "old, new",
            "FELIX_HISTORY_SIZE": "50",
            "FELIX_RETENTION_SECONDS": "1.5",
            "FELIX_ACCESS_LOG": "yes",
        }
    )
    assert settings.api_keys == ("old", "new")
    assert settings.history_size == 50
    assert settings.retention_seconds == 1.5
    assert settings.access_log is True
    assert not settings.dev_mode


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FELIX_HISTORY_SIZE", "lots"),
        ("FELIX_HISTORY_SIZE", "0"),
        ("FELIX_PING_INTERVAL", "-1"),
        ("FELIX_ACCESS_LOG", "maybe"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_every_setting_has_a_variable() -> None:
    import attrs

    names = {field.name for field in attrs.fields(Settings)}
    assert names == set(ENVIRONMENT)
