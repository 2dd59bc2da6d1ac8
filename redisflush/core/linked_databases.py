"""A Managed Redis database's geo-replication group, and the scope rule a flush obeys: the
target and every linked database it flushes lie inside REDISFLUSH_ALLOWED_SCOPES."""
from __future__ import annotations

import json

from ..errors import ValidationError
from .decision import Context
from .state import TargetState
from .target_end import end_target
from .targets import in_scopes, parse_database_id, parse_resource_id


def linked_databases(body: bytes, own_key: str) -> tuple[str, ...] | None:
    """`properties.geoReplication.linkedDatabases[].id` minus the database itself, as given
    (Azure compares these ids with case); None when the body is not a database resource."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("properties", {}), dict):
        return None
    geo = doc.get("properties", {}).get("geoReplication") or {}
    if not isinstance(geo, dict):
        return None
    items = geo.get("linkedDatabases")
    if not isinstance(items, (list, type(None))):
        return None
    ids = [i.get("id") for i in items or [] if isinstance(i, dict)]
    return tuple(dict.fromkeys(i for i in ids if isinstance(i, str) and i.lower() != own_key))


def check_linked(ts: TargetState, cx: Context, then: str = "; nothing was flushed"
                 ) -> TargetState:
    """A linked database is flushed too: it must be a database id inside the allowed scopes."""
    for linked in ts.linked or ():
        try:
            target = parse_resource_id(parse_database_id(linked, "linkedDatabaseIds"))
        except ValidationError:  # ARM gave something other than a database id
            target = None
        if target is None or not in_scopes(target, cx.scopes):
            return end_target(ts, cx, "Rejected", {
                "code": "LinkedDatabaseNotAllowed", "target": "linkedDatabaseIds",
                "message": f"linked database {linked[:300]} is not a Managed Redis database "
                           f"inside REDISFLUSH_ALLOWED_SCOPES{then}"})
    return ts


def refused(ts: TargetState, cx: Context) -> TargetState | None:
    """A target about to be POSTed (its claim held), ended Rejected when it or a linked
    database is outside the allowed scopes: a poll message is input too (another sender on
    the poll queue, or the setting narrowed since the request came), and arrival checked only
    the request's own ids. Only here: a claim still to be answered may adopt a flush another
    delivery got accepted, which is followed to its end. None when it may go on."""
    if ts.phase != "post":
        return None
    again = ("; an earlier attempt of it failed and, if that one reached ARM, may have run"
             if ts.failures else "; nothing was flushed")
    if not in_scopes(ts.target, cx.scopes):
        return end_target(ts, cx, "Rejected", {
            "code": "OutsideAllowedScopes", "target": "resourceId",
            "message": f"{ts.target.resource_id} is outside the scopes this app may flush "
                       "(REDISFLUSH_ALLOWED_SCOPES, which may have changed since the request "
                       f"came): its flush request was not sent{again}"})
    checked = check_linked(ts, cx, again)
    return checked if checked.phase == "done" else None
