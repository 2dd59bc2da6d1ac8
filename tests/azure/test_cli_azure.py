"""`send` / `watch` over Azure Service Bus, checked at the SDK's network edge (see conftest)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode
from azure.servicebus import exceptions as sbx

import redisflush.sender.azure as remote
import redisflush.sender.commands as commands
from redisflush.cli import main
from redisflush.errors import ConfigurationError
from redisflush.sender.azure import SERVICE_BUS_SCOPE
from redisflush.sender.namespace import namespace_host

from .conftest import CONNECTION, RESOURCE_ID, FakeBus, completion_body, progress_body

REPO = Path(__file__).resolve().parents[2]
BOUND = 45.0  # seconds an unreachable namespace may take to become an error line


def run(app_root: Path, *args: str) -> int:
    return main(["--app-root", str(app_root), *args])


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


def body_of(message: ServiceBusMessage) -> dict[str, Any]:
    return json.loads(b"".join(message.body))


class FakeCredential:
    """Stands in for DefaultAzureCredential; `error` makes get_token fail like the real one."""

    instances: list[FakeCredential] = []
    error: BaseException | None = None

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.scopes: list[tuple[str, ...]] = []
        FakeCredential.instances.append(self)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        if FakeCredential.error is not None:
            raise FakeCredential.error
        return AccessToken("fake-token", int(time.time()) + 3600)

    def close(self) -> None:
        pass


@pytest.fixture
def fake_credential(monkeypatch: pytest.MonkeyPatch) -> type[FakeCredential]:
    import azure.identity

    FakeCredential.instances, FakeCredential.error = [], None
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeCredential)
    return FakeCredential


# -- send --wait ---------------------------------------------------------------------------

def test_send_wait_sends_the_request_and_follows_its_reply_session(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    fake_bus.deliver(progress_body("req-1"), completion_body("req-1", "Succeeded"))

    code = run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               RESOURCE_ID, "--wait", "--json", "--timeout", "600", "--request-id", "req-1",
               "--reason", "deploy 42", "--requested-by", "pipeline")

    out, err = capsys.readouterr()
    assert code == 0, err
    # the message, as azure-servicebus will put it on the wire
    assert len(fake_bus.sent) == 1
    queue, message, timeout = fake_bus.sent[0]
    assert queue == "req-q"
    assert isinstance(message, ServiceBusMessage)
    # a new MessageId on every send; the requestId travels in the body (docs/design.md)
    assert message.message_id.startswith("req-1:") and len(message.message_id) == 22
    assert message.correlation_id == "req-1"
    assert message.reply_to == "reply-q"
    # a reply session of this send's own: what an earlier send of req-1 left is never read
    assert message.reply_to_session_id == message.message_id
    assert message.content_type == "application/json"
    assert message.session_id is None
    assert dict(message.application_properties) == {"requestId": "req-1",
                                                    "cacheName": "cache-one"}
    assert body_of(message) == {"resourceId": RESOURCE_ID, "requestId": "req-1",
                                "reason": "deploy 42", "requestedBy": "pipeline",
                                "timeoutSeconds": 600}
    assert timeout is not None and timeout <= remote.FAIL_WITHIN
    assert all(sender.closed for sender in fake_bus.senders)
    # the reply session: opened before the request left, then read and settled
    (receiver,) = fake_bus.receivers
    assert receiver.args == ("reply-q",)
    assert receiver.kwargs["session_id"] == message.message_id
    assert 0 < receiver.kwargs["max_wait_time"] <= remote.RECEIVE_WAIT
    assert fake_bus.log == ["open queue receiver", "send to req-q"]
    assert receiver.completed == [progress_body("req-1"), completion_body("req-1")]
    assert receiver.closed
    # --json: the event is the one stdout line; progress went to stderr
    lines = out.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "RedisFlush.FlushCompleted"
    assert event["id"] == "req-1:completed"
    assert event["data"]["status"] == "Succeeded"
    assert "InProgress 50%" in err


def test_send_wait_passes_bounded_retry_options_to_the_real_client(
        app_root: Path, fake_bus: FakeBus) -> None:
    fake_bus.deliver(completion_body("req-2"))
    assert run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               RESOURCE_ID, "--wait", "--request-id", "req-2") == 0
    (client,) = fake_bus.clients
    assert client["namespace"] == "unit-test-ns.servicebus.windows.net"
    assert client["retry_total"] == remote.RETRY_TOTAL <= 3
    assert client["retry_mode"] == "exponential"
    assert client["retry_backoff_factor"] <= 1
    assert client["try_timeout"] == remote.TRY_TIMEOUT
    worst = ((remote.RETRY_TOTAL + 1) * remote.TRY_TIMEOUT
             + sum(min(remote.RETRY_BACKOFF_MAX, remote.RETRY_BACKOFF_FACTOR * 2 ** n)
                   for n in range(remote.RETRY_TOTAL)))
    assert worst <= remote.FAIL_WITHIN


@pytest.mark.parametrize("status, code", [("Succeeded", 0), ("Failed", 1), ("Canceled", 1),
                                          ("Rejected", 1), ("TimedOut", 3)])
def test_send_wait_exit_code_follows_the_event_status(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str],
        status: str, code: int) -> None:
    error = None if status == "Succeeded" else {"code": "X", "message": "why"}
    fake_bus.deliver(completion_body("req-3", status, error=error))
    assert run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               RESOURCE_ID, "--wait", "--json", "--request-id", "req-3") == code
    event = json.loads(capsys.readouterr().out.strip())
    assert event["data"]["status"] == status


def test_send_wait_ignores_other_requests_in_the_session(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    fake_bus.deliver(completion_body("someone-else", "Failed"), b"not json at all",
                     completion_body("req-4", "Succeeded"))
    assert run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               RESOURCE_ID, "--wait", "--json", "--request-id", "req-4") == 0
    assert json.loads(capsys.readouterr().out)["data"]["requestId"] == "req-4"
    (receiver,) = fake_bus.receivers
    assert receiver.dead_lettered == [(b"not json at all", "UnreadableEvent")]
    assert len(receiver.completed) == 2


def test_send_wait_gives_up_with_exit_3_and_renews_the_session_lock(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "WAIT_MARGIN", -29.6)       # --timeout 30 -> wait 0.4 s
    monkeypatch.setattr(remote, "SESSION_RENEW_EVERY", 0.0)
    started = time.monotonic()
    code = run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               RESOURCE_ID, "--wait", "--timeout", "30", "--request-id", "req-5")
    assert time.monotonic() - started < 5
    out, err = capsys.readouterr()
    assert code == 3
    assert out == ""
    assert "TimedOut: no completion event for request req-5" in err
    (receiver,) = fake_bus.receivers
    assert receiver.session.renewals >= 1
    assert all(0 < c["max_wait_time"] <= 0.4 for c in receiver.receive_calls)
    assert receiver.closed


def test_send_without_wait_prints_the_request_id_and_returns_at_once(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               RESOURCE_ID)
    assert time.monotonic() - started < 2
    out, _ = capsys.readouterr()
    assert code == 0
    (queue, message, _), = fake_bus.sent
    assert out.strip() == body_of(message)["requestId"] == message.correlation_id
    assert len(out.strip()) == 36                       # a new UUID
    assert message.message_id.startswith(out.strip() + ":")
    assert message.reply_to is None and message.reply_to_session_id is None
    assert fake_bus.receivers == []


def test_send_dry_run_touches_no_bus(app_root: Path, fake_bus: FakeBus,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               RESOURCE_ID, "--dry-run", "--reason", "lint") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"resourceId": RESOURCE_ID, "reason": "lint",
                       "requestId": printed["requestId"]}
    assert len(printed["requestId"]) == 36
    assert fake_bus.clients == [] and fake_bus.sent == []


# -- watch ---------------------------------------------------------------------------------

def test_watch_reads_the_all_subscription_filters_by_status_and_settles(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    fake_bus.deliver(completion_body("a", "Succeeded"), completion_body("b", "Failed"),
                     b"\x00garbage", completion_body("c", "TimedOut"))
    code = run(app_root, "watch", "--connection-string", CONNECTION, "--status",
               "Failed, timedout", "--json", "--timeout", "0.5")
    out, _ = capsys.readouterr()
    assert code == 0
    statuses = [json.loads(line)["data"]["status"] for line in out.splitlines()]
    assert statuses == ["Failed", "TimedOut"]
    (receiver,) = fake_bus.receivers
    assert receiver.kind == "subscription"
    assert receiver.args == ("events-t", "all")
    assert receiver.kwargs["receive_mode"] == ServiceBusReceiveMode.PEEK_LOCK
    assert receiver.opened and receiver.closed
    # everything read is settled: filtered-out events completed too, garbage dead-lettered
    assert receiver.completed == [completion_body("a", "Succeeded"),
                                  completion_body("b", "Failed"),
                                  completion_body("c", "TimedOut")]
    assert receiver.dead_lettered == [(b"\x00garbage", "UnreadableEvent")]


def test_watch_named_subscription_and_count_leave_the_rest_unlocked(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    fake_bus.deliver(completion_body("a"), completion_body("b"), completion_body("c"))
    assert run(app_root, "watch", "--connection-string", CONNECTION, "--subscription-name",
               "ops", "--count", "1") == 0
    out, _ = capsys.readouterr()
    assert out.startswith("Succeeded: cache-one request=a")
    assert len(out.splitlines()) == 1
    (receiver,) = fake_bus.receivers
    assert receiver.args == ("events-t", "ops")
    assert receiver.completed == [completion_body("a")]
    assert len(receiver.pending) == 2                # never received, so never locked
    assert all(c["max_message_count"] == 1 for c in receiver.receive_calls)


# -- identity ------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["myns-test", "myns-test.servicebus.windows.net",
                                   "sb://myns-test.servicebus.windows.net/"])
def test_namespace_uses_default_azure_credential(
        app_root: Path, fake_bus: FakeBus, fake_credential: type[FakeCredential],
        given: str) -> None:
    fake_bus.deliver(completion_body("req-6"))
    assert run(app_root, "send", "--namespace", given, "--resource-id", RESOURCE_ID,
               "--wait", "--request-id", "req-6") == 0
    (client,) = fake_bus.clients
    assert client["namespace"] == "myns-test.servicebus.windows.net"
    (credential,) = fake_credential.instances
    assert credential.scopes[0] == (SERVICE_BUS_SCOPE,)     # fetched before any link
    assert client["credential"].credential is credential


def test_namespace_from_settings_uses_identity_and_the_sample_placeholder_does_not(
        app_root: Path, fake_bus: FakeBus, fake_credential: type[FakeCredential],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ServiceBusConnection__fullyQualifiedNamespace",
                       "your-namespace.servicebus.windows.net")
    assert run(app_root, "send", "--resource-id", RESOURCE_ID) == 2
    assert "no Service Bus given" in one_error_line(capsys.readouterr().err)
    assert fake_bus.clients == []
    monkeypatch.setenv("ServiceBusConnection__fullyQualifiedNamespace",
                       "real-ns-01.servicebus.windows.net")
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    assert run(app_root, "send", "--resource-id", RESOURCE_ID) == 0
    assert fake_bus.clients[0]["namespace"] == "real-ns-01.servicebus.windows.net"
    assert fake_credential.instances[-1].kwargs == {
        "managed_identity_client_id": "11111111-2222-3333-4444-555555555555"}


def test_bad_credentials_give_one_line_and_exit_2_before_any_connection(
        app_root: Path, fake_bus: FakeBus, fake_credential: type[FakeCredential],
        capsys: pytest.CaptureFixture[str]) -> None:
    fake_credential.error = ClientAuthenticationError(
        message="AADSTS7000215: Invalid client secret provided.\nTrace ID: 1234")
    assert run(app_root, "send", "--namespace", "myns-test", "--resource-id", RESOURCE_ID,
               "--wait") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "Azure sign-in failed" in line and "AADSTS7000215" in line
    assert "az login" in line
    assert fake_bus.clients == [] and fake_bus.sent == []


def test_no_credential_at_all_gives_one_line(
        app_root: Path, fake_bus: FakeBus, fake_credential: type[FakeCredential],
        capsys: pytest.CaptureFixture[str]) -> None:
    fake_credential.error = CredentialUnavailableError(message="Azure CLI not found on path")
    assert run(app_root, "watch", "--namespace", "myns-test") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no Azure credential" in line and "myns-test.servicebus.windows.net" in line


@pytest.mark.parametrize("given", ["ab", "-bad-name-", "has space", "x" * 60])
def test_bad_namespace_names_are_configuration_errors(given: str) -> None:
    with pytest.raises(ConfigurationError):
        namespace_host(given)


# -- errors from the bus ----------------------------------------------------------------------

@pytest.mark.parametrize("error, expected", [
    (sbx.MessagingEntityNotFoundError(message="The messaging entity 'sb://x/req-q' could not "
                                      "be found."), "does not exist"),
    (sbx.ServiceBusAuthorizationError(message="Unauthorized access. 'Send' claim(s) are "
                                      "required to perform this operation."),
     "needs 'Azure Service Bus Data Sender'"),
    (sbx.ServiceBusAuthenticationError(message="InvalidSignature: The token has an invalid "
                                       "signature."), "rejected the credentials"),
    (sbx.OperationTimeoutError(message="Send operation timed out"), "did not answer in time"),
    (sbx.ServiceBusConnectionError(message="Failed to initiate the connection due to "
                                   "exception: [Errno 111] Connection refused"),
     "no connection to namespace unit-test-ns.servicebus.windows.net"),
])
def test_send_errors_become_one_line_and_exit_2(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str],
        error: BaseException, expected: str) -> None:
    fake_bus.send_error = error
    assert run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               RESOURCE_ID) == 2
    line = one_error_line(capsys.readouterr().err)
    assert expected in line
    assert "queue 'req-q'" in line
    assert "SharedAccessKey=" not in line and "dmFsdWU" not in line


def test_unreadable_reply_queue_fails_before_the_request_is_sent(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    fake_bus.open_error = sbx.ServiceBusAuthorizationError(
        message="Unauthorized access. 'Listen' claim(s) are required")
    assert run(app_root, "send", "--connection-string", CONNECTION, "--resource-id",
               RESOURCE_ID, "--wait") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "needs 'Azure Service Bus Data Receiver'" in line and "'reply-q'" in line
    assert fake_bus.sent == []


def test_watch_missing_subscription_names_the_entity(
        app_root: Path, fake_bus: FakeBus, capsys: pytest.CaptureFixture[str]) -> None:
    fake_bus.open_error = sbx.MessagingEntityNotFoundError(message="not found")
    assert run(app_root, "watch", "--connection-string", CONNECTION,
               "--subscription-name", "nope") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "subscription 'nope' of topic 'events-t'" in line and "does not exist" in line


def test_malformed_connection_string_is_one_line_without_the_secret(
        app_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(app_root, "send", "--connection-string", "SharedAccessKey=s3cr3t-value",
               "--resource-id", RESOURCE_ID) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--connection-string" in line and "s3cr3t" not in line


# -- the real client, failing fast on this machine ------------------------------------------------

def emulator_connection(port: int) -> str:
    # UseDevelopmentEmulator=true makes azure-servicebus keep the port and skip TLS: the
    # real pure-Python AMQP client connects to 127.0.0.1:<port> and nothing leaves the host.
    return (f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=dmFsdWU=;"
            "UseDevelopmentEmulator=true")


@pytest.mark.parametrize("command", [
    ["send", "--resource-id", RESOURCE_ID],
    ["send", "--resource-id", RESOURCE_ID, "--wait", "--timeout", "900"],
    ["watch"],
])
def test_unreachable_namespace_fails_within_the_bound(
        app_root: Path, closed_port: int, capsys: pytest.CaptureFixture[str],
        command: list[str]) -> None:
    started = time.monotonic()
    code = run(app_root, *command, "--connection-string", emulator_connection(closed_port))
    elapsed = time.monotonic() - started
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no connection to namespace 127.0.0.1" in line and "check the namespace" in line
    assert elapsed < BOUND


def test_unknown_namespace_host_is_reported_as_dns(
        app_root: Path, fake_credential: type[FakeCredential],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[tuple[str, int]] = []

    def no_such_host(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        attempts.append(address)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_such_host)
    started = time.monotonic()
    assert run(app_root, "send", "--namespace", "no-such-ns-42", "--resource-id",
               RESOURCE_ID) == 2
    assert time.monotonic() - started < BOUND
    line = one_error_line(capsys.readouterr().err)
    assert "no-such-ns-42.servicebus.windows.net does not resolve" in line
    assert attempts and attempts[0][0] == "no-such-ns-42.servicebus.windows.net"


def _subprocess_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_", "ServiceBusConnection", "REDISFLUSH_", "IDENTITY_",
                                "MSI_"))}
    # Only the Azure CLI credential, and no `az` on PATH: fails on this machine, no network.
    env.update(AZURE_TOKEN_CREDENTIALS="AzureCliCredential", PATH=str(home / "no-bin"),
               HOME=str(home), PYTHONPATH=str(REPO))
    return env


@pytest.mark.parametrize("bus", ["namespace", "connection"])
def test_cli_subprocess_prints_one_line_no_traceback(
        app_root: Path, tmp_path: Path, closed_port: int, bus: str) -> None:
    options = (["--namespace", "myns-test"] if bus == "namespace"
               else ["--connection-string", emulator_connection(closed_port)])
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "redisflush", "send", *options,
                           "--resource-id", RESOURCE_ID, "--wait", "--json"],
                          cwd=app_root, env=_subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=BOUND + 15)
    assert time.monotonic() - started < BOUND
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    line = one_error_line(proc.stderr)
    if bus == "namespace":
        assert "no Azure credential" in line and "AzureCliCredential" in line
    else:
        assert "no connection to namespace 127.0.0.1" in line


@pytest.mark.parametrize("command", [["send", "--resource-id", RESOURCE_ID], ["watch"]])
def test_a_namespace_that_never_answers_fails_within_the_bound(
        app_root: Path, silent_port: int, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    """The SDK's retries and try_timeout do not cover a peer that takes the connection and
    says nothing: without the sender's own bound this hung for minutes in the AMQP login."""
    monkeypatch.setattr(remote, "FAIL_WITHIN", 2.0)
    started = time.monotonic()
    code = run(app_root, *command, "--connection-string", emulator_connection(silent_port))
    assert code == 2
    assert time.monotonic() - started < 10.0
    line = one_error_line(capsys.readouterr().err)
    assert "no answer within 2 s" in line and "namespace 127.0.0.1" in line
