"""Azure Managed Redis (`Microsoft.Cache/redisEnterprise`) in the emulator: the database
resource, its flush with the linked databases of its geo-replication group, and the two ways
to poll that flush. Shapes follow `arm-enterprise-flush.json` (docs/design.md, "What ARM
really does"):

- `GET .../databases/{db}`: the resource, `properties.geoReplication.linkedDatabases` listing
  the group (the database itself included), `{id, state: "Linked"}` each.
- `POST .../databases/{db}/flush`: body `{"ids": [...]}`, required up to api-version
  2025-04-01 (400 without it), optional after. Every id must be, verbatim (ARM compares them
  case-sensitively), a database of the same group (400 otherwise). 202 with body
  `{"StatusCode":202}`, `Azure-AsyncOperation` = `.../locations/{region}/operationsStatus/{id}`
  and `Location` = `.../databases/{db}/operationresults/{id}`, both signed; Retry-After only
  when the behaviour sets `retryAfter` (as 2026-09-01 does). A success deletes the keys of the
  database and of every database in `ids`, once each.
- The operationsStatus URL answers 200 `{id, name, status, startTime}` while running (not 202,
  unlike classic Redis) and 200 with the terminal status and `endTime` at the end; a Failed
  one's `error` is an ErrorResponse, `{"error": {code, message}}`, as the RedisEnterprise
  specification's OperationStatus declares it (classic Redis: a bare ErrorDetail).
- The Location URL answers 202 without a body while running, 200 without a body (204 with
  `locationDoneNoContent`) when Succeeded, and the operation's error otherwise (HTTP status
  `failureStatus`, default 500).
"""
from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

from .emulator_clusters import Cluster, database_id, database_key
from .emulator_config import EmulatorConfig
from .emulator_http import Reply, error_reply
from .emulator_operations import ENTERPRISE, Operation, OperationBook
from .emulator_replies import (
    ArmRequest,
    invalid_signature,
    iso,
    not_found,
    operation_not_found,
    percent,
    poll_gate,
    post_gate,
    terminal,
)

DATABASE_TYPE = "Microsoft.Cache/redisEnterprise/databases"
_LAST_BODY_REQUIRED = "2025-04-01"
_UNREADABLE = "The request content was invalid and could not be deserialized: "


def database_resource(cfg: EmulatorConfig, sub: str, cluster: Cluster, db: str) -> dict[str, Any]:
    """The database as `GET .../databases/{db}` and the databases list show it."""
    props: dict[str, Any] = {"provisioningState": "Succeeded", "resourceState": "Running",
                             "clientProtocol": "Encrypted", "port": 10000}
    group = cfg.geo_group(cluster, db, sub)
    if group is not None:
        linked = [{"id": i, "state": "Linked"} for i, _, _ in group[1]]
        props["geoReplication"] = {"groupNickname": group[0], "linkedDatabases": linked}
    rg = cfg.cluster_rg(cluster)
    return {"id": database_id(cluster.subscription_id or sub, rg, cluster.name, db),
            "name": db, "type": DATABASE_TYPE, "properties": props}


def _bad_request(code: str, message: str, target: str | None = None) -> Reply:
    reply = error_reply(400, code, message)
    if target:
        reply.body["error"]["target"] = target
    return reply


def _retry_after(op: Operation) -> dict[str, str]:
    return {} if op.beh.retry_after is None else {"Retry-After": str(op.beh.retry_after)}


class EnterpriseRoutes:
    """The Managed Redis database routes; the front door has run (`emulator_arm`)."""

    def __init__(self, book: OperationBook) -> None:
        self._book, self._lock, self._clock = book, book.lock, book.clock

    def _find(self, req: ArmRequest) -> tuple[Cluster, str] | Reply:
        sub, rg, cluster, db = (req.seg(i) for i in range(4))
        c = req.cfg.cluster_at(sub, rg, cluster)
        name = c.database(db) if c else None
        if c is None or name is None:
            return not_found("Microsoft.Cache/redisEnterprise", f"{cluster}/databases/{db}", rg)
        return c, name

    # ---- the database resource -------------------------------------------------------------
    def database(self, req: ArmRequest) -> Reply:
        found = self._find(req)
        if isinstance(found, Reply):
            return found
        c, db = found
        with self._lock:
            self._book.counters(database_key(c.name, db))["gets"] += 1
            self._book.save(None, database_key(c.name, db))
        return Reply(200, database_resource(req.cfg, req.seg(0), c, db))

    # ---- the flush -------------------------------------------------------------------------
    def _linked(self, req: ArmRequest, c: Cluster, db: str) -> list[tuple[str, int | None]] | Reply:
        """The (key, redisDb) of each database the body's `ids` name, or ARM's 400."""
        text = req.body.strip()
        if not text:
            if req.api[:10] <= _LAST_BODY_REQUIRED:
                return _bad_request("InvalidRequestContent", _UNREADABLE + f"api-version "
                                    f"{req.api} requires a body {{\"ids\": [...]}}.")
            return []
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        ids = data.get("ids") if isinstance(data, dict) else None
        ids = [] if ids is None and isinstance(data, dict) else ids
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _bad_request("InvalidRequestContent", _UNREADABLE + "expected an object "
                                "with 'ids', an array of database ids.")
        group = req.cfg.geo_group(c, db, req.seg(0))
        members = {i: (mc, md) for i, mc, md in group[1]} if group else {}
        out = []
        for i in ids:
            if i not in members:
                return _bad_request("BadRequest", f"The database '{i}' is not linked to database "
                                    f"'{c.name}/{db}': 'ids' must name databases of its "
                                    "geo-replication group (ids are case-sensitive).", "ids")
            mc, md = members[i]
            beh = req.cfg.database_behaviour(mc.name, md)
            out.append((database_key(mc.name, md), beh.redis_db if beh else None))
        return out

    def flush(self, req: ArmRequest) -> Reply:
        found = self._find(req)
        if isinstance(found, Reply):
            return found
        c, db = found
        beh = req.cfg.database_behaviour(c.name, db)
        assert beh is not None
        linked = self._linked(req, c, db)
        if isinstance(linked, Reply):
            linked.delay = beh.latency
            return linked
        sub, rg, name, now = req.seg(0), req.cfg.cluster_rg(c), f"{c.name}/{db}", self._clock.time()
        with self._lock:
            reply = post_gate(self._book, name, beh, now, database_id(sub, rg, c.name, db))
            if reply is None and not beh.immediate:
                op = Operation(str(uuid.uuid4()), sub, rg, name, req.api, now, beh,
                               kind=ENTERPRISE, location=c.location or req.cfg.location,
                               also=linked)
                op_id = self._book.add_url(op, req.cfg.signed_url_bytes)
                headers = self._monitor_headers(req.base, op, op_id)
                self._book.save(op, name)
                return Reply(202, {"StatusCode": 202}, headers, beh.latency)
            self._book.save(None, name)
        if reply is not None:
            reply.delay = beh.latency
            return reply
        targets = Operation("", sub, rg, name, req.api, now, beh, also=linked).targets()
        self._book.flush_now(targets)     # immediate: 200, no body
        return Reply(200, None, {}, beh.latency)

    # ---- operation URLs --------------------------------------------------------------------
    def _urls(self, base: str, op: Operation, op_id: str) -> tuple[str, str]:
        """(Azure-AsyncOperation, Location) for URL id `op_id`, each signed for its own path."""
        host, loc = op.beh.foreign_host or base, quote(op.location, safe="")
        rg, cluster, db = (quote(p, safe="") for p in (op.rg, *op.cache.split("/")))
        status_query = self._book.query(op_id, f"operationsStatus/{loc}")
        location_query = self._book.query(op_id, f"databases/{rg}/{cluster}/{db}")
        status = (f"{host}/subscriptions/{op.sub}/providers/Microsoft.Cache/locations/{loc}"
                  f"/operationsStatus/{op_id}?{status_query}")
        location = (f"{host}/subscriptions/{op.sub}/resourceGroups/{rg}/providers/"
                    f"Microsoft.Cache/redisEnterprise/{cluster}/databases/{db}"
                    f"/operationresults/{op_id}?{location_query}")
        return status, location

    def _monitor_headers(self, base: str, op: Operation, op_id: str) -> dict[str, str]:
        status, location = self._urls(base, op, op_id)
        mode = op.beh.poll_mode
        out = {"Azure-AsyncOperation": status} if mode in ("both", "async") else {}
        if mode in ("both", "location"):
            out["Location"] = location
        return {**out, **_retry_after(op)}

    # ---- polls -----------------------------------------------------------------------------
    def _polled(self, req: ArmRequest, op_id: str, scope: str) -> tuple[Operation, int] | Reply:
        """Verify the URL and count the poll: (operation, how many polls it had before)."""
        if not self._book.verify(op_id, scope, req.params):
            return invalid_signature()
        with self._lock:
            op = self._book.ops.get(op_id)
            if op is None or op.kind != ENTERPRISE:
                return operation_not_found(op_id)
            k = op.polls
            op.polls += 1
            self._book.counters(op.cache)["polls"] += 1
            self._book.save(op, op.cache)
        return op, k

    def _moved(self, req: ArmRequest, op: Operation, k: int) -> dict[str, str] | None:
        """`moveAfterPolls`: the monitor headers of a new URL id, once."""
        if not op.beh.move_after_polls or k + 1 < op.beh.move_after_polls:
            return None
        with self._lock:
            if op.moved:
                return None
            op.moved, new_id = True, self._book.add_url(op, req.cfg.signed_url_bytes)
            self._book.save(op)
        return self._monitor_headers(req.base, op, new_id)

    def status_poll(self, req: ArmRequest) -> Reply:
        polled = self._polled(req, req.seg(2), f"operationsStatus/{req.groups[1] or ''}")
        if isinstance(polled, Reply):
            return polled
        op, k = polled
        done = self._book.settle(op)
        reply = poll_gate(op.beh, k) or self._status(req, op, k, done)
        reply.delay = op.beh.latency
        return reply

    def _status(self, req: ArmRequest, op: Operation, k: int, done: bool) -> Reply:
        region = op.location.lower().replace(" ", "")     # ARM's own spelling: "westus3"
        result: dict[str, Any] = {
            "id": f"/subscriptions/{op.sub}/providers/Microsoft.Cache/locations/{region}"
                  f"/operationsStatus/{op.id}",
            "name": op.id, "status": "InProgress", "startTime": iso(op.accepted_at)}
        moved = self._moved(req, op, k)
        if moved is not None:
            return Reply(202, result, moved)
        if done:
            return Reply(200, terminal(result, op.beh, op.accepted_at, error_response=True))
        if op.beh.percent_complete:
            result["percentComplete"] = percent(self._clock.time(), op.accepted_at,
                                                op.beh.duration)
        return Reply(200, result, _retry_after(op))

    def location_poll(self, req: ArmRequest) -> Reply:
        op_id = req.seg(4)
        polled = self._polled(req, op_id, "databases/" + "/".join(g or "" for g in req.groups[1:4]))
        if isinstance(polled, Reply):
            return polled
        op, k = polled
        done = self._book.settle(op)
        reply = poll_gate(op.beh, k) or self._location(req, op, op_id, k, done)
        reply.delay = op.beh.latency
        return reply

    def _location(self, req: ArmRequest, op: Operation, op_id: str, k: int, done: bool) -> Reply:
        moved = self._moved(req, op, k)
        if moved is not None:
            return Reply(202, None, moved)
        if not done:
            headers = {"Location": self._urls(req.base, op, op_id)[1], **_retry_after(op)}
            return Reply(202, None, headers)
        if op.beh.outcome == "Succeeded":
            return Reply(204 if op.beh.location_done_no_content else 200)
        error = op.beh.failure() if op.beh.outcome == "Failed" else {
            "code": "OperationCanceled", "message": "The flush operation was canceled."}
        return Reply(op.beh.failure_status, {"error": error})
