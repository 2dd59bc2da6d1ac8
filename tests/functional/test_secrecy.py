"""Tokens and signed operation-URL parameters never reach logs, events or reply messages.

Logs are captured at DEBUG for redisflush's own loggers and at INFO (the host.json default,
"Information") for everything else.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.support.harness import CACHE, RG, SUB, Harness, database_id, target_of
from tests.support.scripted_arm import Answer, Operation, ScriptedArm

TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLXBheWxvYWQ.c2lnbmF0dXJl"


def both(url: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url, "Location": url}


def secrets_of(*ops: Operation) -> dict[str, str]:
    found = {"token": TOKEN, "bearer": "Bearer "}
    for n, op in enumerate(ops):
        query = urlsplit(op.url).query
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key != "api-version":
                found[f"op{n}.{key}"] = value  # decoded value
        for part in query.split("&"):
            key, _, raw = part.partition("=")
            if key != "api-version":
                found[f"op{n}.{key}.raw"] = raw  # as it appears in the URL
        found[f"op{n}.query"] = query
    return found


def everything_said(h: Harness, caplog: pytest.LogCaptureFixture) -> str:
    said = [caplog.text]
    said += [r.getMessage() for r in caplog.records]
    said += [r.exc_text or "" for r in caplog.records]
    for entity, envelopes in h.bus.accepted.items():
        if entity == h.settings.poll_queue:
            continue  # internal continuation: it must carry the URL to follow it
        said += [e.message.body.decode("utf-8", "replace") for e in envelopes]
        said += [repr(dict(e.message.application_properties)) for e in envelopes]
    return "\n".join(said)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "azure", "requests"):
        caplog.set_level(logging.INFO, logger=name)
    caplog.set_level(logging.DEBUG, logger="redisflush")
    return caplog


# the POST must be answered within it on a loaded machine; the status reads of
# "timeouts-then-deadline" never are
READ_TIMEOUT = 1.0


def _scenario(h: Harness, servers: Callable[..., ScriptedArm], which: str) -> list[Operation]:
    op = h.arm.new_operation(SUB, huge=True)
    h.arm.on_flush(SUB, RG, CACHE, Answer(202, both(op.url), b""))
    if which == "succeeded":
        h.arm.on_operation(op, Answer(202, both(op.url), op.status("InProgress",
                                                                   percentComplete=50.0)),
                           Answer(200, {}, op.status("Succeeded")))
        return [op]
    if which == "untrusted-move":
        other = servers("127.0.0.1")
        moved = other.new_operation(SUB, huge=True)
        h.arm.on_operation(op, Answer(202, both(moved.url), op.status("InProgress")))
        return [op, moved]
    if which == "timeouts-then-deadline":
        # far past the read timeout: each status read times out however slow the machine
        # (0.4 s against 0.15 s raced the POST's own answer against that timeout under load)
        h.arm.on_operation(op, then=Answer(200, {}, op.status("InProgress"), delay=30))
        return [op]
    if which == "refused-then-deadline":
        h.arm.on_operation(op, then=Answer(200, {}, op.status("InProgress")))
        return [op]
    if which == "unusable-status":
        h.arm.on_operation(op, then=Answer(404, {}, {"error": {"code": "NotFound",
                                                               "message": "no such op"}}))
        return [op]
    raise AssertionError(which)


@pytest.mark.parametrize("which", ["succeeded", "untrusted-move", "timeouts-then-deadline",
                                   "refused-then-deadline", "unusable-status"])
def test_no_token_or_signature_in_logs_events_or_replies(
        make_harness: Callable[..., Harness], servers: Callable[..., ScriptedArm],
        logs: pytest.LogCaptureFixture, which: str) -> None:
    h = make_harness(token=TOKEN, timeouts=(1.0, READ_TIMEOUT))
    ops = _scenario(h, servers, which)
    rid = h.send_request(reply_to="redis-flush-replies", reply_to_session_id="s",
                         timeoutSeconds=30)
    if which == "refused-then-deadline":
        h.run(limit=1)
        h.arm.stop()
    h.run()

    status = {"succeeded": "Succeeded", "untrusted-move": "Failed",
              "timeouts-then-deadline": "TimedOut", "refused-then-deadline": "TimedOut",
              "unusable-status": "Failed"}[which]
    h.event(rid, status)
    said = everything_said(h, logs)
    assert logs.records, "nothing was logged: the check would be empty"
    leaked = [name for name, value in secrets_of(*ops).items() if value and value in said]
    assert leaked == []
    # The ARM requests themselves did carry the token (so the check above means something).
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in h.arm.requests)
    # and the poll messages did carry the verbatim URL (needed to continue)
    assert ops[0].url in {target_of(p)["pollUrl"] for p in h.polls(rid)}


def test_a_token_source_that_never_works_times_out_without_any_request(
        make_harness: Callable[..., Harness], logs: pytest.LogCaptureFixture) -> None:
    class Broken:
        def token(self, scope: str) -> str:
            raise RuntimeError("token endpoint said no")

    h = make_harness(tokens=Broken())
    h.arm.on_flush(SUB, RG, CACHE, then=Answer(200, {}, b""))
    rid = h.send_request(timeoutSeconds=30)
    h.run()
    data = h.event(rid, "TimedOut", arm_requests=0)
    assert data["error"]["details"][0]["code"] == "TokenUnavailable"
    assert h.arm.requests == []


def test_no_signature_of_either_managed_redis_url_is_logged_or_published(
        make_harness: Callable[..., Harness], logs: pytest.LogCaptureFixture) -> None:
    """Managed Redis signs both URLs (operationsStatus and the database's operationresults):
    neither one's query reaches a log line, an event or a reply."""
    h = make_harness(token=TOKEN)
    status, location = h.arm.new_enterprise_operation(SUB, RG, "amr-eu", "default")
    h.arm.on_enterprise_flush(SUB, RG, "amr-eu", "default", Answer(
        202, {"Azure-AsyncOperation": status.url, "Location": location.url},
        {"StatusCode": 202}))
    h.arm.on_operation(status, Answer(200, {}, status.status("InProgress")),
                       Answer(200, {}, status.status("Succeeded")))
    db = database_id("amr-eu")
    rid = h.send_request({"resourceId": db, "linkedDatabaseIds": []},
                         reply_to="redis-flush-replies", reply_to_session_id="s")
    h.run()
    h.event(rid, "Succeeded", rid=db)
    said = everything_said(h, logs)
    leaked = [name for name, value in secrets_of(status, location).items()
              if value and value in said]
    assert leaked == []
    assert status.url in {target_of(p)["pollUrl"] for p in h.polls(rid)}
