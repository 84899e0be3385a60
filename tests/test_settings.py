"""Settings: production defaults, parsing, and refusal of bad values (exit 2, variable named)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import Settings, SettingsError
from tests.helpers import run_dq


def test_production_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.job_timeout == 300
    assert settings.request_timeout == 30
    assert settings.workers == 4
    assert settings.cleanup_interval == 2
    assert settings.shutdown_grace == 300
    assert settings.queue_name == "downloads"
    assert settings.download_dir == Path("downloads").absolute()
    assert settings.state_dir == Path("var").absolute()
    assert settings.dashboard_host == "127.0.0.1" and settings.dashboard_port == 9181
    assert settings.dashboard_auth is None
    assert settings.allow_private_networks is False
    assert settings.embedded_redis
    assert settings.effective_redis_url == f"unix://{Path('var').absolute()}/redis.sock"


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://127.0.0.1:6380/2",
            "DQ_QUEUE": "music",
            "DQ_WORKERS": "2",
            "DQ_JOB_TIMEOUT": "60",
            "DQ_REQUEST_TIMEOUT": "0.5",
            "DQ_CLEANUP_INTERVAL": "0.25",
            "DQ_SHUTDOWN_GRACE": "0",
            "DQ_ALLOW_PRIVATE_NETWORKS": "1",
            "DQ_DASHBOARD_USERNAME": "me",
            "DQ_DASHBOARD_PASSWORD": "secret",
            "DQ_DASHBOARD_HOST": "0.0.0.0",
        }
    )
    assert settings.redis_url == "redis://127.0.0.1:6380/2" and not settings.embedded_redis
    assert (settings.queue_name, settings.workers, settings.job_timeout) == ("music", 2, 60)
    assert (settings.request_timeout, settings.cleanup_interval, settings.shutdown_grace) == (0.5, 0.25, 0)
    assert settings.allow_private_networks
    assert settings.dashboard_auth == ("me", "secret")
    settings.check_dashboard_bind()  # credentials make a public bind acceptable


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DQ_WORKERS", "0"),
        ("DQ_WORKERS", "four"),
        ("DQ_WORKERS", "2.5"),
        ("DQ_JOB_TIMEOUT", "-1"),
        ("DQ_JOB_TIMEOUT", "abc"),
        ("DQ_REQUEST_TIMEOUT", "0"),
        ("DQ_REQUEST_TIMEOUT", "nan"),
        ("DQ_CLEANUP_INTERVAL", "-2"),
        ("DQ_SHUTDOWN_GRACE", "-5"),
        ("DQ_DASHBOARD_PORT", "http"),
        ("DQ_ALLOW_PRIVATE_NETWORKS", "maybe"),
        ("REDIS_URL", "localhost:6379"),
        ("DQ_QUEUE", "my queue"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_credentials_must_come_in_pairs() -> None:
    with pytest.raises(SettingsError, match="DQ_DASHBOARD_PASSWORD"):
        Settings.from_env({"DQ_DASHBOARD_USERNAME": "me"})


@pytest.mark.parametrize("variable", ["DQ_DASHBOARD_USERNAME", "DQ_DASHBOARD_PASSWORD"])
@pytest.mark.parametrize("blank", [" ", "\t", "   \n"])
def test_blank_credentials_are_refused(variable: str, blank: str) -> None:
    env = {"DQ_DASHBOARD_USERNAME": "me", "DQ_DASHBOARD_PASSWORD": "secret", variable: blank}
    with pytest.raises(SettingsError, match=f"{variable} must not be blank"):
        Settings.from_env(env)


def test_the_safety_settings_defaults_and_values() -> None:
    defaults = Settings.from_env({})
    assert defaults.max_file_bytes is None
    assert defaults.allowed_hosts == {"127.0.0.1", "127.0.0.1:9181", "localhost", "localhost:9181"}
    hosts = "Music.Example.com, box:8080"
    chosen = Settings.from_env(
        {"DQ_MAX_FILE_MB": "2.5", "DQ_DASHBOARD_ALLOWED_HOSTS": hosts, "DQ_DASHBOARD_PORT": "80"}
    )
    assert chosen.max_file_bytes == 2_500_000
    assert chosen.allowed_hosts == {"music.example.com", "music.example.com:80", "box:8080"}
    bad_values = [
        {"DQ_MAX_FILE_MB": "-1"},
        {"DQ_DASHBOARD_ALLOWED_HOSTS": "a,,b"},
        {"DQ_DASHBOARD_ALLOWED_HOSTS": "a/b"},
    ]
    for bad in bad_values:
        with pytest.raises(SettingsError, match=next(iter(bad))):
            Settings.from_env(bad)


def test_public_dashboard_bind_needs_credentials() -> None:
    with pytest.raises(SettingsError, match="DQ_DASHBOARD_HOST"):
        Settings.from_env({"DQ_DASHBOARD_HOST": "0.0.0.0"}).check_dashboard_bind()
    Settings.from_env({"DQ_DASHBOARD_HOST": "::1"}).check_dashboard_bind()


@pytest.mark.parametrize("command", [["stats"], ["jobs"], ["enqueue", "https://example.org/a.flac"]])
def test_commands_exit_2_on_a_bad_setting(env: dict[str, str], command: list[str]) -> None:
    env = dict(env, DQ_WORKERS="0")
    result = run_dq(command, env)
    assert result.returncode == 2, result.stderr
    assert "DQ_WORKERS must be at least 1" in result.stderr


def test_the_api_logging_and_retention_settings() -> None:
    defaults = Settings.from_env({})
    assert (defaults.api_token, defaults.api_max_body, defaults.api_rate) == (None, 65536, 120)
    assert (defaults.queue_warn, defaults.queue_max) == (1000, 10000)
    assert (defaults.log_format, defaults.keep_completed, defaults.keep_failed) == ("text", 86400, 604800)
    chosen = Settings.from_env(
        {
            "DQ_API_TOKEN": "abc",
            "DQ_API_MAX_BODY": "1024",
            "DQ_API_RATE": "5",
            "DQ_QUEUE_WARN": "0",
            "DQ_QUEUE_MAX": "20",
            "DQ_LOG_FORMAT": "JSON",
            "DQ_KEEP_COMPLETED": "60",
            "DQ_KEEP_FAILED": "120",
        }
    )
    assert (chosen.api_token, chosen.api_max_body, chosen.api_rate) == ("abc", 1024, 5)
    assert (chosen.queue_warn, chosen.queue_max, chosen.log_format) == (0, 20, "json")
    assert (chosen.keep_completed, chosen.keep_failed) == (60, 120)
    bad_values = [
        {"DQ_API_TOKEN": "  "},
        {"DQ_API_MAX_BODY": "0"},
        {"DQ_API_RATE": "lots"},
        {"DQ_QUEUE_MAX": "0"},
        {"DQ_QUEUE_WARN": "-1"},
        {"DQ_LOG_FORMAT": "xml"},
        {"DQ_KEEP_COMPLETED": "0"},
        {"DQ_KEEP_FAILED": "1.5"},
    ]
    for bad in bad_values:
        with pytest.raises(SettingsError, match=next(iter(bad))):
            Settings.from_env(bad)
