"""settings.py: defaults, validation naming the setting, loopback-only http, scopes."""
from __future__ import annotations

from pathlib import Path

import pytest

from redisflush.errors import ConfigurationError
from redisflush.settings import DEFAULTS, Settings, is_loopback_http

SUB = "00000000-1111-2222-3333-444444444444"


def test_defaults(tmp_path):
    settings = Settings.from_env({}, app_root=tmp_path)
    assert settings == Settings(local_dir=tmp_path / ".redisflush")
    assert (settings.request_queue, settings.poll_queue, settings.events_topic,
            settings.reply_queue) == ("redis-flush-requests", "redis-flush-polls",
                                      "redis-flush-events", "redis-flush-replies")
    assert settings.arm_endpoint == "https://management.azure.com"
    assert settings.token_scope == "https://management.azure.com/.default"
    assert settings.api_version == "2023-08-01"
    assert settings.timeout_seconds == 1800
    assert settings.allowed_scopes == ()
    assert settings.client_id is None
    assert settings.service_bus_connection is None and settings.service_bus_namespace is None
    assert settings.is_local_endpoint is False


def test_documented_names_are_exactly_the_defaults_table():
    assert set(DEFAULTS) == {
        "ServiceBusConnection", "ServiceBusConnection__fullyQualifiedNamespace",
        "REDISFLUSH_REQUEST_QUEUE", "REDISFLUSH_POLL_QUEUE", "REDISFLUSH_EVENTS_TOPIC",
        "REDISFLUSH_REPLY_QUEUE", "REDISFLUSH_ARM_ENDPOINT", "REDISFLUSH_API_VERSION",
        "AZURE_CLIENT_ID", "REDISFLUSH_TIMEOUT_SECONDS", "REDISFLUSH_ALLOWED_SCOPES",
        "REDISFLUSH_LOCAL_DIR"}


def test_every_setting_is_read(tmp_path):
    env = {
        "ServiceBusConnection": "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;"
                                "SharedAccessKey=dmFsdWU=",
        "ServiceBusConnection__fullyQualifiedNamespace": "x.servicebus.windows.net",
        "REDISFLUSH_REQUEST_QUEUE": "req", "REDISFLUSH_POLL_QUEUE": "poll",
        "REDISFLUSH_EVENTS_TOPIC": "events", "REDISFLUSH_REPLY_QUEUE": "replies",
        "REDISFLUSH_ARM_ENDPOINT": "https://management.usgovcloudapi.net/",
        "REDISFLUSH_API_VERSION": "2024-03-01", "AZURE_CLIENT_ID": "client-1",
        "REDISFLUSH_TIMEOUT_SECONDS": " 600 ", "REDISFLUSH_ALLOWED_SCOPES":
            f" /subscriptions/{SUB}/resourceGroups/rg/ , ,/subscriptions/{SUB}/resourceGroups/b",
        "REDISFLUSH_LOCAL_DIR": str(tmp_path / "state"),
    }
    s = Settings.from_env(env)
    assert (s.request_queue, s.poll_queue, s.events_topic, s.reply_queue) == (
        "req", "poll", "events", "replies")
    assert s.arm_endpoint == "https://management.usgovcloudapi.net"
    assert s.token_scope == "https://management.usgovcloudapi.net/.default"
    assert (s.api_version, s.client_id, s.timeout_seconds) == ("2024-03-01", "client-1", 600)
    assert s.allowed_scopes == (f"/subscriptions/{SUB}/resourceGroups/rg",
                                f"/subscriptions/{SUB}/resourceGroups/b")
    assert s.service_bus_connection == env["ServiceBusConnection"]
    assert s.service_bus_namespace == "x.servicebus.windows.net"
    assert s.local_dir == tmp_path / "state"
    assert "SharedAccessKey" not in repr(s)  # the connection string stays out of logs


def test_empty_values_mean_default(tmp_path):
    env = {name: "  " for name in DEFAULTS}
    assert Settings.from_env(env, app_root=tmp_path) == Settings.from_env({}, app_root=tmp_path)


@pytest.mark.parametrize("name, value", [
    ("REDISFLUSH_TIMEOUT_SECONDS", "abc"), ("REDISFLUSH_TIMEOUT_SECONDS", "29"),
    ("REDISFLUSH_TIMEOUT_SECONDS", "86401"), ("REDISFLUSH_TIMEOUT_SECONDS", "60.5"),
    ("REDISFLUSH_TIMEOUT_SECONDS", "-1"),
    ("REDISFLUSH_ARM_ENDPOINT", "management.azure.com"),
    ("REDISFLUSH_ARM_ENDPOINT", "ftp://management.azure.com"),
    ("REDISFLUSH_ARM_ENDPOINT", "http://management.azure.com"),
    ("REDISFLUSH_ARM_ENDPOINT", "http://10.0.0.4:8080"),
    ("REDISFLUSH_ARM_ENDPOINT", "http://localhost.evil.example"),
    ("REDISFLUSH_ARM_ENDPOINT", "http://127.0.0.1.nip.io"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com/path"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com?x=1"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com#f"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://user:pw@management.azure.com"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com:abc"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com:99999"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://"), ("REDISFLUSH_ARM_ENDPOINT", "https://[::1"),
    ("REDISFLUSH_ALLOWED_SCOPES", "rg-prod"),
    ("REDISFLUSH_ALLOWED_SCOPES", f"/subscriptions/{SUB},resourceGroups/rg"),
    ("REDISFLUSH_REQUEST_QUEUE", "has space"), ("REDISFLUSH_POLL_QUEUE", "q" * 261),
    ("REDISFLUSH_EVENTS_TOPIC", "tópico"), ("REDISFLUSH_REPLY_QUEUE", "a;b"),
])
def test_invalid_setting_names_itself(name, value):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({name: value})
    assert str(info.value).startswith(f"{name}:")


@pytest.mark.parametrize("endpoint, expected, local", [
    ("https://management.azure.com", "https://management.azure.com", False),
    ("https://management.azure.com/", "https://management.azure.com", False),
    ("https://management.azure.com:443", "https://management.azure.com:443", False),
    ("http://127.0.0.1:7071", "http://127.0.0.1:7071", True),
    ("http://localhost:7071/", "http://localhost:7071", True),
    ("http://127.0.0.2", "http://127.0.0.2", True),
    ("http://[::1]:8080", "http://[::1]:8080", True),
    ("https://127.0.0.1:8443", "https://127.0.0.1:8443", False),
])
def test_arm_endpoint(endpoint, expected, local):
    settings = Settings.from_env({"REDISFLUSH_ARM_ENDPOINT": endpoint})
    assert settings.arm_endpoint == expected
    assert settings.is_local_endpoint is local


@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1", True), ("http://localhost:1", True), ("http://[::1]", True),
    ("https://127.0.0.1", False), ("http://10.1.1.1", False), ("http://example.com", False),
    ("http://", False), ("http://0.0.0.0", False),
])
def test_is_loopback_http(url, loopback):
    assert is_loopback_http(url) is loopback


@pytest.mark.parametrize("value, expected", [
    (f"/subscriptions/{SUB}", (f"/subscriptions/{SUB}",)),
    (f"/subscriptions/{SUB}/", (f"/subscriptions/{SUB}",)),
    (f"/SUBSCRIPTIONS/{SUB}", (f"/SUBSCRIPTIONS/{SUB}",)),
    (f"/subscriptions/{SUB}/resourceGroups/a,/subscriptions/{SUB}/resourceGroups/b",
     (f"/subscriptions/{SUB}/resourceGroups/a", f"/subscriptions/{SUB}/resourceGroups/b")),
    (",,", ()),
])
def test_allowed_scopes_parsing(value, expected):
    assert Settings.from_env({"REDISFLUSH_ALLOWED_SCOPES": value}).allowed_scopes == expected


@pytest.mark.parametrize("value, expected", [("30", 30), ("86400", 86400), ("1800", 1800)])
def test_timeout_bounds(value, expected):
    assert Settings.from_env({"REDISFLUSH_TIMEOUT_SECONDS": value}).timeout_seconds == expected


def test_local_dir_defaults_under_the_app_root():
    root = Path("/srv/app")
    assert Settings.from_env({}, app_root=root).local_dir == root / ".redisflush"
