"""The CLI's `send --wait` takes only its own send's final event (a reply session of its own,
so what an earlier send of the same requestId left in the queue is never read), and `watch`
into a reader that stops (`| head -1`) ends without a traceback."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import redisflush.sender.commands as commands
from redisflush.cli import main
from redisflush.core.outbound import OutboundMessage

APP_ROOT = Path(__file__).resolve().parents[2]
SUB = "00000000-0000-0000-0000-000000000000"
RG = "rg"


def _rid(cache: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Cache/redis/{cache}"


def _event(request_id: str, event_id: str, cache: str, status: str,
           error: dict[str, Any] | None = None) -> bytes:
    return json.dumps({
        "specversion": "1.0", "type": "RedisFlush.FlushCompleted", "id": event_id,
        "source": _rid(cache), "subject": cache,
        "data": {"requestId": request_id, "status": status, "resourceId": _rid(cache),
                 "error": error}}).encode()


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A private local bus (REDISFLUSH_LOCAL_DIR) and its settings."""
    for name in ("REDISFLUSH_TIMEOUT_SECONDS", "REDISFLUSH_REPLY_QUEUE",
                 "REDISFLUSH_REQUEST_QUEUE", "REDISFLUSH_ALLOWED_SCOPES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDISFLUSH_LOCAL_DIR", str(tmp_path / "local"))
    from redisflush.local.runtime import local_settings, open_bus

    settings = local_settings(APP_ROOT)[0]
    bus = open_bus(settings)
    yield settings, bus
    bus.close()


def test_send_wait_does_not_take_a_stale_event_left_in_its_reply_session(
        local: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An earlier `send --request-id deploy-7 --wait` for cache-a was interrupted (exit 130) or
    gave up (exit 3); its final event later landed in reply session `deploy-7` with no one
    to read it. A later `send --request-id deploy-7 --wait` for cache-b is Rejected by the app
    (RequestIdReused), but the waiter takes the stale cache-a event as its own: exit 0 and
    stdout says cache-a Succeeded, for a request that flushed nothing.
    (Reproduced end to end with serve --local: first send Ctrl-C'd, serve started, second send
    for another cache exits 0 printing the first cache's event.)"""
    settings, bus = local
    # the leftover: cache-a's final event, in the session the CLI listens on (the requestId)
    bus.send(settings.reply_queue, [OutboundMessage(
        _event("deploy-7", "deploy-7:completed", "cache-a", "Succeeded"),
        "deploy-7:completed", session_id="deploy-7")])

    from redisflush.sender.local import LocalChannel
    sent = LocalChannel.send_request

    def send_and_answer(self: LocalChannel, message: OutboundMessage) -> None:
        """The app's answer to the request just sent: RequestIdReused, to its ReplyTo session."""
        sent(self, message)
        self.bus.send(message.reply_to, [OutboundMessage(
            _event("deploy-7", "deploy-7:reused:0123456789ab:completed", "cache-b", "Rejected",
                   {"code": "RequestIdReused", "message": "requestId: was already used"}),
            "deploy-7:reused:0123456789ab:completed",
            session_id=message.reply_to_session_id)])

    monkeypatch.setattr(LocalChannel, "send_request", send_and_answer)
    monkeypatch.setattr(commands, "WAIT_MARGIN", -25.0)      # --timeout 30 -> wait 5 s
    code = main(["--app-root", str(APP_ROOT), "send", "--local", "--wait", "--json",
                 "--timeout", "30", "--subscription", SUB, "--resource-group", RG,
                 "--cache", "cache-b", "--request-id", "deploy-7"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert json.loads(out)["data"]["resourceId"] == _rid("cache-b"), out


def test_send_wait_does_not_take_another_sends_rejection_as_its_own(
        local: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """README ("The completion events"): a request rejected on arrival has the id
    `{requestId}:rejected:{digest of its MessageId}:completed` "so the corrected request, sent
    again under the same requestId, gets its own `{requestId}:completed`". The waiter accepts a
    rejection with *any* digest: a rejection of an earlier send (another MessageId) left in
    the session ends the corrected send's wait as Rejected (exit 1) though the corrected
    request Succeeded. The CLI knows its own MessageId, hence the digest it should accept."""
    settings, bus = local
    bus.send(settings.reply_queue, [OutboundMessage(
        _event("deploy-8", "deploy-8:rejected:aaaaaaaaaaaa:completed", "cache-a", "Rejected",
               {"code": "InvalidRequest", "message": "resourceGroup: outside the scopes"}),
        "deploy-8:rejected:aaaaaaaaaaaa:completed", session_id="deploy-8")])

    from redisflush.sender.local import LocalChannel
    sent = LocalChannel.send_request

    def send_and_answer(self: LocalChannel, message: OutboundMessage) -> None:
        sent(self, message)
        self.bus.send(message.reply_to, [OutboundMessage(
            _event("deploy-8", "deploy-8:completed", "cache-a", "Succeeded"),
            "deploy-8:completed", session_id=message.reply_to_session_id)])

    monkeypatch.setattr(LocalChannel, "send_request", send_and_answer)
    monkeypatch.setattr(commands, "WAIT_MARGIN", -25.0)
    code = main(["--app-root", str(APP_ROOT), "send", "--local", "--wait", "--json",
                 "--timeout", "30", "--subscription", SUB, "--resource-group", RG,
                 "--cache", "cache-a", "--request-id", "deploy-8"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads(out)["id"] == "deploy-8:completed"


def test_watch_into_a_closed_pipe_is_no_traceback(local: Any) -> None:
    """`redisflush watch --json | head -1` (or `| jq ... | head -1`): once the reader is gone
    the next print raises BrokenPipeError, which main() re-raises: a Python traceback on
    stderr and exit 1 (the code for Failed/Canceled/Rejected) instead of one line."""
    import subprocess
    import sys

    settings, bus = local
    events = [OutboundMessage(_event(f"w{n}", f"w{n}:completed", f"cache-{n}", "Succeeded"),
                              f"w{n}:completed") for n in range(2000)]  # over a pipe buffer
    for lo in range(0, len(events), 200):
        bus.publish(settings.events_topic, events[lo:lo + 200])
    proc = subprocess.Popen([sys.executable, "-m", "redisflush", "watch", "--local", "--json",
                             "--timeout", "10"], cwd=APP_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert json.loads(first)["id"] == "w0:completed"
    proc.stdout.close()                                    # `head -1` exits
    err = proc.stderr.read().decode()
    proc.wait(30)
    assert "Traceback" not in err, err
    assert proc.returncode != 1, (proc.returncode, err)


def test_watch_with_stdout_closed_takes_nothing_off_the_bus(local: Any) -> None:
    """`redisflush watch >&-`: every print would vanish while each event is completed, so
    it refuses to start (exit 2) and the events stay for the next reader."""
    import subprocess
    import sys

    settings, bus = local
    bus.publish(settings.events_topic, [OutboundMessage(
        _event("c1", "c1:completed", "cache-1", "Succeeded"), "c1:completed")])
    done = subprocess.run(
        f"'{sys.executable}' -m redisflush watch --local --json --timeout 2 >&-", shell=True,
        cwd=APP_ROOT, stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 2 and b"stdout, which is closed" in done.stderr, done.stderr
    code = main(["--app-root", str(APP_ROOT), "watch", "--local", "--json", "--count", "1",
                 "--timeout", "5"])
    assert code == 0


def _events_topic(local: Any) -> Callable[[str, str, str], None]:
    """The events topic with the `all` subscription open, and a way to put a request's
    completion event on it."""
    settings, bus = local
    topic = settings.events_topic
    bus.ensure_topic(topic)
    bus.ensure_subscription(topic, "all")

    def publish(request_id: str, cache: str, status: str) -> None:
        event_id = f"{request_id}:completed"
        bus.publish(topic, [OutboundMessage(_event(request_id, event_id, cache, status),
                                            event_id)])
    return publish


def test_watch_timeout_counts_from_when_the_subscription_is_open(
        local: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`watch --timeout S` with events already waiting: a start-up slower than S (imports and
    the bus file on a loaded machine, an AMQP link to Azure) must not use up the S seconds
    before the first look. It printed nothing and exited 0 (seen in the e2e suite under load:
    `watch --timeout 3` found none of the 6 events on the topic)."""
    publish = _events_topic(local)
    publish("r-1", "cache-a", "Succeeded")
    from redisflush.local.bus import LocalBus

    opened = LocalBus.ensure_subscription

    def slow_open(self: Any, *args: Any, **kwargs: Any) -> Any:
        import time
        time.sleep(1.5)  # a start-up that outlasts --timeout
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(LocalBus, "ensure_subscription", slow_open)
    assert main(["watch", "--local", "--json", "--timeout", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["r-1:completed"]


def test_watch_count_that_the_timeout_cuts_short_exits_3(
        local: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`watch --count 2 --timeout S` that sees one event: a pipeline waiting for its N events
    must not read a success (it exited 0, as a full count does). Exit 3, as a `--wait` that
    gave up, saying how many came."""
    publish = _events_topic(local)
    publish("r-1", "cache-a", "Succeeded")
    assert main(["watch", "--local", "--json", "--count", "2", "--timeout", "1"]) == 3
    out, err = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["r-1:completed"]
    assert "1 of the 2 events (--count) before --timeout 1 s" in err
    publish("r-2", "cache-b", "Succeeded")
    publish("r-3", "cache-c", "Failed")
    assert main(["watch", "--local", "--json", "--count", "2", "--timeout", "5"]) == 0
