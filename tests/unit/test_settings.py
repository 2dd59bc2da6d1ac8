"""settings.py: defaults, validation naming the setting, loopback-only http, scopes; the
README's settings table and local.settings.sample.json list exactly what the code reads."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from redisflush.errors import ConfigurationError
from redisflush.settings import DEFAULTS, Settings, is_loopback_http

SUB = "00000000-1111-2222-3333-444444444444"
ROOT = Path(__file__).resolve().parents[2]


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
    assert settings.ledger_table == "redisflushrequests"
    assert settings.enterprise_api_version == "2025-07-01"
    assert settings.max_targets == 50
    assert (settings.storage_connection, settings.storage_account_name,
            settings.storage_table_service_uri) == (None, None, None)


# --- the documented lists are the code's list -------------------------------------------------

def readme_settings_table() -> dict[str, str | None]:
    """name -> default from the markdown table under README's "## Settings" heading.

    A name cell holds one or more `names` (joined by "or" for alternatives, "/" for a
    group); the default cell holds one `value` per name of a "/" group, or starts with
    "none" (no default)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Settings\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Settings' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header == ["name", "default", "meaning"]
    assert set(rows[1].replace("|", "").strip()) <= set("-: ")
    table: dict[str, str | None] = {}
    for row in rows[2:]:
        name_cell, default_cell, meaning = (c.strip() for c in row.strip("|").split("|"))
        names = re.findall(r"`([^`]+)`", name_cell)
        assert names and meaning, row
        if default_cell.lower().startswith("none"):
            defaults: list[str | None] = [None] * len(names)
        else:
            defaults = list(re.findall(r"`([^`]*)`", default_cell))
            assert len(defaults) == len(names), f"one default per name: {row}"
        for name, default in zip(names, defaults, strict=True):
            assert name not in table, f"{name} twice in the README table"
            table[name] = default
    return table


# Values the sample gives settings that have no default, so `func start` works from a copy:
# the namespace placeholder (the sender recognises it), Azurite for the host's storage, and
# the local dir spelled out.
SAMPLE_PLACEHOLDERS = {
    "ServiceBusConnection__fullyQualifiedNamespace": "your-namespace.servicebus.windows.net",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "REDISFLUSH_LOCAL_DIR": ".redisflush",
}
HOST_ONLY = {"FUNCTIONS_WORKER_RUNTIME"}  # read by the Functions host, not by the app


def sample_values() -> dict[str, str]:
    doc = json.loads((ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))
    return {k: v for k, v in doc["Values"].items() if k not in HOST_ONLY}


def test_readme_settings_table_lists_exactly_the_settings_with_their_defaults():
    assert readme_settings_table() == DEFAULTS


def test_sample_settings_list_exactly_the_settings_with_their_defaults():
    values = sample_values()
    assert set(values) == set(DEFAULTS)
    for name, default in DEFAULTS.items():
        if default is not None:
            assert values[name] == default, name
        else:
            assert values[name] in ("", SAMPLE_PLACEHOLDERS.get(name)), name


def test_the_sample_is_a_valid_configuration(tmp_path):
    Settings.from_env(sample_values(), app_root=tmp_path)


def test_every_default_is_valid_and_is_what_the_code_uses(tmp_path):
    from_defaults = Settings.from_env({k: v for k, v in DEFAULTS.items() if v is not None},
                                      app_root=tmp_path)
    assert from_defaults == Settings.from_env({}, app_root=tmp_path)


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
        "REDISFLUSH_LEDGER_TABLE": "Ledger2", "REDISFLUSH_ENTERPRISE_API_VERSION":
            "2024-09-01-preview", "REDISFLUSH_MAX_TARGETS": "40",
        "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=st1;"
                               "AccountKey=c2VjcmV0a2V5;EndpointSuffix=core.windows.net",
        "AzureWebJobsStorage__accountName": "st1",
        "AzureWebJobsStorage__tableServiceUri": "https://st1.table.core.windows.net/",
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
    assert (s.ledger_table, s.enterprise_api_version, s.max_targets) == (
        "Ledger2", "2024-09-01-preview", 40)
    assert s.storage_connection == env["AzureWebJobsStorage"]
    assert "AccountKey" not in repr(s) and "c2VjcmV0a2V5" not in repr(s)
    assert s.storage_account_name == "st1"
    assert s.storage_table_service_uri == "https://st1.table.core.windows.net"


def test_empty_values_mean_default(tmp_path):
    env = {name: "  " for name in DEFAULTS}
    assert Settings.from_env(env, app_root=tmp_path) == Settings.from_env({}, app_root=tmp_path)


@pytest.mark.parametrize("name, value", [
    ("REDISFLUSH_TIMEOUT_SECONDS", "abc"), ("REDISFLUSH_TIMEOUT_SECONDS", "29"),
    ("REDISFLUSH_TIMEOUT_SECONDS", "86401"), ("REDISFLUSH_TIMEOUT_SECONDS", "60.5"),
    ("REDISFLUSH_TIMEOUT_SECONDS", "-1"), ("REDISFLUSH_TIMEOUT_SECONDS", "--60"),
    ("REDISFLUSH_MAX_TARGETS", "--5"), ("REDISFLUSH_TIMEOUT_SECONDS", "1_800"),
    ("REDISFLUSH_TIMEOUT_SECONDS", "+60"), ("REDISFLUSH_TIMEOUT_SECONDS", "\u0663\u0660"),
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
    # set but naming no scope: parsed to (), it would mean no restriction (fail open)
    ("REDISFLUSH_ALLOWED_SCOPES", ","), ("REDISFLUSH_ALLOWED_SCOPES", " , "),
    ("REDISFLUSH_ALLOWED_SCOPES", ",,"),
    # user info of any kind (an empty username still carries a password), an empty port
    # (token scope `https://host:/.default`), and hosts or ports no DNS name or IP has
    ("REDISFLUSH_ARM_ENDPOINT", "https://:pw@management.azure.com"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://@management.azure.com"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com:"),
    ("REDISFLUSH_ARM_ENDPOINT", "http://[::1]:"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com:0"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com:0443"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://ma nagement.azure.com"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://%6danagement.azure.com"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com\\x"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com;x"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com."),
    ("REDISFLUSH_ARM_ENDPOINT", "https://mänagement.azure.com"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com#"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com/?"),
    ("AzureWebJobsStorage__tableServiceUri", "https://:pw@st1.table.core.windows.net"),
    ("AzureWebJobsStorage__tableServiceUri", "https://st1.table.core.windows.net:"),
    ("AzureWebJobsStorage__tableServiceUri", "https://st1.table.core.windows.net/?"),
    ("REDISFLUSH_ALLOWED_SCOPES", "rg-prod"),
    ("REDISFLUSH_ALLOWED_SCOPES", f"/subscriptions/{SUB},resourceGroups/rg"),
    ("REDISFLUSH_REQUEST_QUEUE", "has space"), ("REDISFLUSH_POLL_QUEUE", "q" * 261),
    ("REDISFLUSH_EVENTS_TOPIC", "tópico"), ("REDISFLUSH_REPLY_QUEUE", "a;b"),
    ("REDISFLUSH_REPLY_QUEUE", "replies/sub"),
    ("REDISFLUSH_LEDGER_TABLE", "ab"), ("REDISFLUSH_LEDGER_TABLE", "1table"),
    ("REDISFLUSH_LEDGER_TABLE", "redis-flush"), ("REDISFLUSH_LEDGER_TABLE", "t" * 64),
    ("REDISFLUSH_LEDGER_TABLE", "tablé"), ("REDISFLUSH_LEDGER_TABLE", "tables"),
    ("REDISFLUSH_LEDGER_TABLE", "Tables"),
    ("REDISFLUSH_API_VERSION", "2023-8-1"), ("REDISFLUSH_API_VERSION", "latest"),
    ("REDISFLUSH_API_VERSION", "2023-08-01-beta"), ("REDISFLUSH_API_VERSION", "2023-08-01&x=1"),
    ("REDISFLUSH_API_VERSION", "\u0662023-08-01"), ("REDISFLUSH_API_VERSION", "2023-18-01"),
    ("REDISFLUSH_ENTERPRISE_API_VERSION", "2025-02-30-preview"),
    ("REDISFLUSH_ENTERPRISE_API_VERSION", "2025-07"),
    ("REDISFLUSH_ENTERPRISE_API_VERSION", "2025-07-01T00"), ("REDISFLUSH_MAX_TARGETS", "0"),
    ("REDISFLUSH_MAX_TARGETS", "51"), ("REDISFLUSH_MAX_TARGETS", "ten"),
    ("REDISFLUSH_MAX_TARGETS", "5.0"), ("REDISFLUSH_MAX_TARGETS", "9" * 5000),
    ("REDISFLUSH_TIMEOUT_SECONDS", "9" * 5000),
    ("AzureWebJobsStorage", "not a connection string"), ("AzureWebJobsStorage", "=x;"),
    ("AzureWebJobsStorage__accountName", "My_Account"),
    ("AzureWebJobsStorage__accountName", "ab"), ("AzureWebJobsStorage__accountName", "a" * 25),
    ("AzureWebJobsStorage__tableServiceUri", "http://st1.table.core.windows.net"),
    ("AzureWebJobsStorage__tableServiceUri", "st1.table.core.windows.net"),
    ("AzureWebJobsStorage__tableServiceUri", "https://st1.table.core.windows.net?sv=1&sig=x"),
    ("AzureWebJobsStorage__tableServiceUri", "https://"),
    ("AzureWebJobsStorage__tableServiceUri", "https://st1.table.core.windows.net:99999"),
])
def test_invalid_setting_names_itself(name, value):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}:")
    assert "must" in message  # and says the rule
    assert "\n" not in message and len(message) < 300


@pytest.mark.parametrize("name", ["REDISFLUSH_API_VERSION", "REDISFLUSH_LEDGER_TABLE",
                                  "REDISFLUSH_REQUEST_QUEUE", "REDISFLUSH_ARM_ENDPOINT",
                                  "REDISFLUSH_MAX_TARGETS", "REDISFLUSH_ALLOWED_SCOPES",
                                  "AzureWebJobsStorage__tableServiceUri"])
def test_a_forged_line_in_a_setting_stays_on_one_line(name):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({name: "x\nERROR forged line\r\u2028\x1b[2J"})
    message = str(info.value)
    assert not any(c in message for c in "\n\r\u2028\x1b"), message


def test_a_broken_storage_connection_string_is_never_echoed():
    secret = "AccountKey c2VjcmV0a2V5 without pairs"
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"AzureWebJobsStorage": secret})
    assert "c2VjcmV0a2V5" not in str(info.value)


@pytest.mark.parametrize("name, value, attr, expected", [
    ("REDISFLUSH_LEDGER_TABLE", "abc", "ledger_table", "abc"),
    ("REDISFLUSH_LEDGER_TABLE", "A" + "b" * 62, "ledger_table", "A" + "b" * 62),
    ("REDISFLUSH_API_VERSION", "2024-03-01-preview", "api_version", "2024-03-01-preview"),
    ("REDISFLUSH_ENTERPRISE_API_VERSION", "2025-04-01", "enterprise_api_version",
     "2025-04-01"),
    ("REDISFLUSH_MAX_TARGETS", "1", "max_targets", 1),
    ("REDISFLUSH_MAX_TARGETS", " 40 ", "max_targets", 40),
    ("AzureWebJobsStorage", "UseDevelopmentStorage=true", "storage_connection",
     "UseDevelopmentStorage=true"),
    ("AzureWebJobsStorage__tableServiceUri", "http://127.0.0.1:10002/devstoreaccount1",
     "storage_table_service_uri", "http://127.0.0.1:10002/devstoreaccount1"),  # Azurite
])
def test_valid_values(name, value, attr, expected):
    assert getattr(Settings.from_env({name: value}), attr) == expected


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
    (f"/subscriptions/{SUB},", (f"/subscriptions/{SUB}",)),  # a stray comma beside a prefix
])
def test_allowed_scopes_parsing(value, expected):
    assert Settings.from_env({"REDISFLUSH_ALLOWED_SCOPES": value}).allowed_scopes == expected


@pytest.mark.parametrize("value, expected", [("30", 30), ("86400", 86400), ("1800", 1800)])
def test_timeout_bounds(value, expected):
    assert Settings.from_env({"REDISFLUSH_TIMEOUT_SECONDS": value}).timeout_seconds == expected


def test_local_dir_defaults_under_the_app_root():
    root = Path("/srv/app")
    assert Settings.from_env({}, app_root=root).local_dir == root / ".redisflush"


@pytest.mark.parametrize("value", ["1", "50", "51", "100", "0"])
def test_the_sender_takes_the_max_targets_the_app_takes(value):
    """`send --dry-run` must not pass a REDISFLUSH_MAX_TARGETS the app refuses at load."""
    from redisflush.sender.settings import SenderSettings

    def outcome(load):
        try:
            return load().max_targets
        except ConfigurationError as exc:
            assert "REDISFLUSH_MAX_TARGETS" in str(exc)
            return "refused"

    app = outcome(lambda: Settings.from_env({"REDISFLUSH_MAX_TARGETS": value}))
    sender = outcome(lambda: SenderSettings.from_values({"REDISFLUSH_MAX_TARGETS": value}))
    assert app == sender


@pytest.mark.parametrize("env,named", [
    ({"REDISFLUSH_POLL_QUEUE": "Redis-Flush-Requests"}, "REDISFLUSH_POLL_QUEUE"),
    ({"REDISFLUSH_REPLY_QUEUE": "redis-flush-polls"}, "REDISFLUSH_REPLY_QUEUE"),
    ({"REDISFLUSH_EVENTS_TOPIC": "q", "REDISFLUSH_REQUEST_QUEUE": "Q"},
     "REDISFLUSH_EVENTS_TOPIC"),
])
def test_one_entity_under_two_settings_is_refused_by_app_and_sender(env, named):
    """A poll queue that is the request queue would feed poll messages to FlushTrigger."""
    from redisflush.sender.settings import SenderSettings

    for load in (lambda: Settings.from_env(env), lambda: SenderSettings.from_values(env)):
        with pytest.raises(ConfigurationError, match=f"^{named}: .* the four entities"):
            load()


@pytest.mark.parametrize("value", ["--60", "1_800", "+60", "\u0663\u0660", "60.0"])
def test_the_sender_takes_whole_numbers_by_the_apps_rule(value):
    """`send --dry-run` must not pass a setting the app refuses (nor crash on one)."""
    from redisflush.sender.settings import SenderSettings

    with pytest.raises(ConfigurationError, match="^REDISFLUSH_TIMEOUT_SECONDS: .*must be"):
        SenderSettings.from_values({"REDISFLUSH_TIMEOUT_SECONDS": value})


def test_the_sender_refuses_a_reply_queue_every_wait_would_be_refused_for() -> None:
    from redisflush.sender.settings import SenderSettings

    with pytest.raises(ConfigurationError, match="^REDISFLUSH_REPLY_QUEUE: .*plain queue"):
        SenderSettings.from_values({"REDISFLUSH_REPLY_QUEUE": "replies/sub"})


def test_a_bad_namespace_setting_is_named_as_the_setting() -> None:
    from redisflush.sender.azure import AzureChannel
    from redisflush.sender.settings import SenderSettings

    settings = SenderSettings.from_values(
        {"ServiceBusConnection__fullyQualifiedNamespace": "not a namespace!"})
    with pytest.raises(ConfigurationError,
                       match="^ServiceBusConnection__fullyQualifiedNamespace: "):
        AzureChannel.open(settings)


@pytest.mark.parametrize("name, value, rule", [
    ("REDISFLUSH_ALLOWED_SCOPES", " , ", "must name at least one resource id prefix"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://:pw@management.azure.com", "no user info"),
    ("REDISFLUSH_ARM_ENDPOINT", "https://management.azure.com:", "a port 1-65535"),
])
def test_a_set_value_that_would_fail_open_or_break_every_flush_says_its_rule(name, value,
                                                                             rule):
    """README, "Settings": a setting that breaks its rule fails the load. These used to load:
    `,` as no restriction at all, and user info or an empty port into every ARM URL and the
    token scope."""
    with pytest.raises(ConfigurationError, match=rule):
        Settings.from_env({name: value})


@pytest.mark.parametrize("worker_module", ["azure_functions_worker", "azure_functions_runtime_v1"])
def test_under_the_functions_worker_the_trigger_queue_settings_are_required(
        monkeypatch: pytest.MonkeyPatch, worker_module: str) -> None:
    """The host resolves function.json's %REDISFLUSH_..._QUEUE% from the app settings alone;
    a function load under its worker fails naming the one missing (the local host resolves
    them itself, so outside the worker the defaults stand)."""
    import types

    from redisflush.functions import check_settings

    both = {"REDISFLUSH_REQUEST_QUEUE": "req", "REDISFLUSH_POLL_QUEUE": "poll"}
    assert check_settings({}).poll_queue == DEFAULTS["REDISFLUSH_POLL_QUEUE"]
    monkeypatch.setitem(sys.modules, worker_module, types.ModuleType(worker_module))
    assert check_settings(both).poll_queue == "poll"
    for name in both:
        for value in (None, "", "  "):
            env = {k: v for k, v in both.items() if k != name or value is not None}
            if value is not None:
                env[name] = value
            with pytest.raises(ConfigurationError, match=f"^{name}: not set; .*%{name}%"):
                check_settings(env)
