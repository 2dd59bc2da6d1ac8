"""Operation URLs pointing anywhere but the configured ARM endpoint: no request, no token.

A second scripted server plays the foreign host; it must see no connection at all.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from redisflush.core.next_message import poll_message
from redisflush.core.request import Delivery, FlushRequest, parse_request
from redisflush.core.state import RunState, initial
from tests.support.harness import CACHE, RG, SUB, Harness, database_id
from tests.support.scripted_arm import Answer, ScriptedArm, flush_path


def _foreign(servers: Callable[..., ScriptedArm], arm: ScriptedArm, how: str
             ) -> tuple[ScriptedArm, str]:
    """(the foreign server, the base URL that points at it) for each way of being foreign."""
    if how == "other-port":
        other = servers("127.0.0.1")
        return other, other.endpoint
    if how == "other-host":
        try:  # same port, another loopback address: only the host differs
            other = servers("127.0.0.2", arm.port)
        except OSError:
            pytest.skip("127.0.0.2 is not bindable here")
        return other, other.endpoint
    if how == "other-scheme":
        # https on the ARM server's own host and port: a client that ignored the scheme
        # would connect to the ARM server itself; it must not (see the connection count).
        return arm, f"https://127.0.0.1:{arm.port}"
    if how == "userinfo":
        other = servers("127.0.0.1")
        return other, f"http://127.0.0.1:{arm.port}@127.0.0.1:{other.port}"
    if how == "localhost-name":
        other = servers("127.0.0.1")
        return other, f"http://localhost:{other.port}"
    raise AssertionError(how)


HOW = ["other-port", "other-host", "other-scheme", "userinfo", "localhost-name"]


def _script_foreign(other: ScriptedArm, path: str) -> None:
    other.on("GET", path, then=Answer(200, {}, {"status": "Succeeded"}))


@pytest.mark.parametrize("how", HOW)
def test_untrusted_operation_url_on_the_post_fails_without_a_request(
        h: Harness, servers: Callable[..., ScriptedArm], how: str) -> None:
    other, base = _foreign(servers, h.arm, how)
    op = h.arm.new_operation(SUB)
    url = base + op.path
    _script_foreign(other, op.path)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Azure-AsyncOperation": url, "Location": url}))
    rid = h.send_request()

    h.run()

    data = h.event(rid, "Failed")
    assert data["error"]["code"] == "UntrustedOperationUrl"
    assert data["armRequests"] == 1
    assert h.polls(rid) == []
    if other is h.arm:
        assert [r.method for r in h.arm.requests] == ["POST"]
        assert h.arm.connections == 1
    else:
        assert other.requests == [] and other.connections == 0


@pytest.mark.parametrize("how", ["other-port", "other-host", "other-scheme"])
def test_a_poll_answer_moving_to_an_untrusted_url_fails_without_a_request(
        h: Harness, servers: Callable[..., ScriptedArm], how: str) -> None:
    other, base = _foreign(servers, h.arm, how)
    op = h.arm.new_operation(SUB)
    moved = base + op.path + "&moved=1"
    _script_foreign(other, op.path + "&moved=1")
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Azure-AsyncOperation": op.url}))
    h.arm.on_operation(op, Answer(202, {"Azure-AsyncOperation": moved},
                                  op.status("InProgress")))
    rid = h.send_request()

    h.run()

    data = h.event(rid, "Failed")
    assert data["error"]["code"] == "UntrustedOperationUrl"
    assert data["armRequests"] == 2
    assert [r.method for r in h.arm.requests] == ["POST", "GET"]
    if other is h.arm:
        assert h.arm.connections == 2
    else:
        assert other.requests == [] and other.connections == 0
    # The event says where it pointed without the signed query.
    assert "?" not in data["error"]["message"].replace("?…", "")
    assert op.path.split("?", 1)[1] not in data["error"]["message"]


def test_an_untrusted_url_in_a_tampered_poll_message_gets_no_token(
        h: Harness, servers: Callable[..., ScriptedArm]) -> None:
    """A poll message is not trusted either: the URL it carries is checked again."""
    other = servers("127.0.0.1")
    op = h.arm.new_operation(SUB)
    _script_foreign(other, op.path)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Azure-AsyncOperation": op.url}))
    rid = h.send_request()
    h.run(limit=1)  # the POST; its poll message now waits on the poll queue
    (waiting,) = h.bus.active[h.settings.poll_queue]
    state = waiting.body_json
    assert state["targets"][0]["pollUrl"] == op.url
    state["targets"][0]["pollUrl"] = other.endpoint + op.path
    waiting.message = replace(waiting.message, body=json.dumps(state).encode())

    h.run()

    assert other.requests == [] and other.connections == 0
    assert [r.method for r in h.arm.requests] == ["POST"]
    data = h.event(rid, "Failed", arm_requests=1)
    assert data["error"]["code"] == "UntrustedOperationUrl"


def _first_poll_state(h: Harness, body: dict[str, Any]) -> dict[str, Any]:
    """The poll state a valid request starts with, as JSON, for a test to tamper with."""
    parsed = parse_request(Delivery(json.dumps(body).encode(), body["requestId"],
                                    enqueued_at=h.clock.now()),
                           default_timeout=1800, allowed_scopes=h.settings.allowed_scopes,
                           max_targets=50, now=h.clock.now())
    assert isinstance(parsed, FlushRequest)
    doc: dict[str, Any] = json.loads(initial(parsed, h.clock.now()).to_json())
    return doc


@pytest.mark.parametrize("tamper", ["target", "linked"])
def test_a_poll_message_naming_a_cache_outside_the_allowed_scopes_flushes_nothing(
        h: Harness, tamper: str) -> None:
    """The allowed scopes are checked again before a target from a poll message is claimed
    or POSTed: a message from another sender on the poll queue (or one written before the
    setting was narrowed) naming a database, or linked ids, outside REDISFLUSH_ALLOWED_SCOPES
    ends Rejected without a flush."""
    doc = _first_poll_state(h, {"resourceId": database_id("near"), "linkedDatabaseIds": [],
                                "requestId": "tampered"})
    doc["phase"] = "run"
    if tamper == "target":
        doc["targets"][0]["target"]["resourceGroup"] = "rg-not-allowed"
    else:
        doc["targets"][0]["linked"] = [database_id(cluster="far", rg="rg-not-allowed")]
    state = RunState.from_json(json.dumps(doc).encode())
    h.bus.send(h.settings.poll_queue, [poll_message(state, h.clock.now())])

    h.run()

    assert [r for r in h.arm.requests if r.method == "POST"] == []
    (event,) = h.events()
    data = json.loads(event.message.body)["data"]
    assert data["status"] == "Rejected"
    assert data["error"]["code"] == ("OutsideAllowedScopes" if tamper == "target"
                                     else "LinkedDatabaseNotAllowed")


def test_a_post_in_doubt_is_not_reported_as_nothing_flushed_after_the_scopes_narrow(
        h: Harness) -> None:
    """A POST answered by a gateway's 504 may have reached ARM (the claim is kept, README
    "The one window left"): if the setting is narrowed before its one resend, the target
    ends OutsideAllowedScopes without saying that nothing was flushed."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(504, {}, b"<html>gateway timeout</html>"),
                   then=Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    h.send_request()

    h.run(limit=1)  # the POST: 504, in doubt; the claim is kept and retried later
    # the setting is narrowed (a redeploy) while the request runs
    h.app.settings = replace(
        h.settings, allowed_scopes=(f"/subscriptions/{SUB}/resourceGroups/rg-elsewhere",))
    h.run()

    (event,) = [json.loads(e.message.body) for e in h.events()]
    data = event["data"]
    assert data["armRequests"] == 1  # the POST did go out
    error = data["error"] or {}
    assert not (data["status"] == "Rejected" and "nothing was flushed" in
                str(error.get("message"))), error


def test_a_narrowed_scope_does_not_overwrite_a_flush_another_chain_got_accepted(
        h: Harness) -> None:
    """The scopes are checked again only when a POST is about to go: a chain waiting on a
    claim another chain holds (a repeat `send --wait`) adopts that chain's accepted flush
    and follows it, even after the setting was narrowed, instead of recording Rejected
    over it (and taking `{requestId}:completed` on the topic from the real outcome)."""
    op = h.arm.new_operation(SUB)
    h.arm.on_flush(SUB, RG, CACHE, Answer(504, {}, b"<html>gateway timeout</html>"),
                   then=Answer(202, {"Azure-AsyncOperation": op.url}, b""))
    h.arm.on_operation(op, then=Answer(200, {}, op.status("Succeeded")))
    h.send_request(requestId="narrow-1", message_id="m-1")
    h.run(limit=1)  # chain 1: the POST in doubt; its claim is kept
    h.send_request(requestId="narrow-1", message_id="m-2", reply_to="redis-flush-replies",
                   reply_to_session_id="s-2")
    h.run(limit=1)  # chain 2 (a repeat waiting for its reply): the claim is busy
    # chain 1 finds the claim busy; then, after the lease, chain 2 claims and POSTs (202)
    while len(h.arm.route("POST", flush_path(SUB, RG, CACHE)).requests) < 2:
        assert h.run(limit=1), "nothing left to deliver"
    (row,) = [r for r in h.ledger.rows("narrow-1") if r.key]
    assert row.state == "accepted"
    # the setting is narrowed (a redeploy) while the flush runs
    h.app.settings = replace(
        h.settings, allowed_scopes=(f"/subscriptions/{SUB}/resourceGroups/rg-elsewhere",))
    h.run()

    (row,) = [r for r in h.ledger.rows("narrow-1") if r.key]
    events = {e.message_id: json.loads(e.message.body)["data"] for e in h.events()}
    assert events["narrow-1:completed"]["status"] != "Rejected", (
        events["narrow-1:completed"]["error"], row.data.get("outcome"))


@pytest.mark.parametrize("where", ["post", "poll"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_so_no_token_goes_where_it_points(
        h: Harness, servers: Callable[..., ScriptedArm], where: str, status: int) -> None:
    """ARM never redirects these calls; a 3xx (a proxy's, a tampered answer) is read as an
    answer, never followed: its Location gets no request and no bearer token."""
    other = servers("127.0.0.1")
    op = h.arm.new_operation(SUB)
    _script_foreign(other, op.path)
    away = Answer(status, {"Location": other.endpoint + op.path}, b"")
    if where == "post":
        h.arm.on_flush(SUB, RG, CACHE, away)
    else:
        h.arm.on_flush(SUB, RG, CACHE, Answer(202, {"Azure-AsyncOperation": op.url}))
        h.arm.on_operation(op, then=away)
    rid = h.send_request(timeoutSeconds=60)

    h.run()

    data = h.event(rid, "Failed")
    assert data["error"]["code"] == ("Http" if where == "post" else "OperationStatusHttp") \
        + str(status)
    assert other.requests == [] and other.connections == 0
    assert all(r.server == h.arm.requests[0].server for r in h.arm.requests)


@pytest.mark.parametrize("phase", ["open", "resolve"])
def test_a_poll_message_with_a_selector_outside_the_allowed_scopes_lists_nothing(
        h: Harness, phase: str) -> None:
    """A selector wholly outside REDISFLUSH_ALLOWED_SCOPES is refused on arrival, before the
    app's identity lists a scope the setting keeps it out of (docs/design.md, "Security
    rules"); a poll message is input too (another sender on the poll queue, or the setting
    narrowed while the listing ran), and one in such a scope was listed all the same, its
    rejection naming the first cache found there."""
    doc = _first_poll_state(h, {"selector": {"subscriptionId": SUB, "resourceGroup": RG,
                                             "tags": {"app": "x"}, "kinds": ["redis"]},
                                "requestId": "sel-tampered"})
    far = "rg-not-allowed"
    doc["selector"]["resourceGroup"] = far
    if phase == "resolve":
        doc["phase"] = "resolve"
        doc["pendingLists"] = [{"kind": "redis", "url": h.arm.endpoint + (
            f"/subscriptions/{SUB}/resourceGroups/{far}/providers/Microsoft.Cache/redis"
            "?api-version=2023-08-01")}]
    state = RunState.from_json(json.dumps(doc).encode())
    h.bus.send(h.settings.poll_queue, [poll_message(state, h.clock.now())])

    h.run()

    assert [(r.method, r.raw_path) for r in h.arm.requests] == []
    (event,) = h.events()
    data = json.loads(event.message.body)["data"]
    assert data["status"] == "Rejected"
    assert "REDISFLUSH_ALLOWED_SCOPES" in data["error"]["message"]
