"""Resolving a selector through ARM's list APIs, one page per call (docs/design.md,
"Listing"). A nextLink is followed only after the same trust check as a poll URL; the page
count is capped so a list that links to itself cannot loop.
"""
from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qsl, quote, urlsplit

from . import cadence, lro
from .answers import ArmAnswer, ArmFailure, error_detail, text_or_none
from .commands import CallArm, Deferred
from .fit import MAX_MESSAGE_BYTES
from .frozen import replace
from .selector import Selector, database_list_path, read_page
from .state import ListCall, RunState
from .targets import ENTERPRISE

MAX_PAGES = 200
# the state a listing may leave for its next message: the message's limit, less room for what
# a step adds before sending it (its number, time, note fields)
CARRIED_BYTES = MAX_MESSAGE_BYTES - 4096
MAX_LIST_FAILURES = 5


class ResolveFailed(Exception):
    """Resolving cannot go on: `code` and `message` go into the request's Failed event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def first_calls(selector: Selector, endpoint: str, api_version: str,
                enterprise_api_version: str) -> tuple[ListCall, ...]:
    calls = []
    for kind, path in selector.list_paths():
        version = enterprise_api_version if kind == ENTERPRISE else api_version
        calls.append(ListCall(kind, f"{endpoint}{path}?api-version={quote(version, safe='')}"))
    return tuple(calls)


def list_call(state: RunState, step: int) -> CallArm:
    call = state.pending_lists[0]
    assert state.selector is not None
    return CallArm("list", "GET", call.url, state.selector.subscription_id,
                   f"{state.origin.request_id}:list.{state.pages}.{step}",
                   paced=state.list_paced, max_inline_wait=cadence.MAX_INLINE_WAIT,
                   large=True)


def on_list_answer(state: RunState, r: ArmAnswer | ArmFailure | Deferred, now: dt.datetime,
                   endpoint: str, enterprise_api_version: str, max_targets: int) -> RunState:
    """The state after one list page (or its failure); ResolveFailed when it cannot go on.
    Listing stops once more than `max_targets` caches matched: the request is rejected
    whatever the rest says, and the ids it would keep could outgrow a poll message."""
    if isinstance(r, Deferred):
        # The subscription's reads are paused (a 429's Retry-After, or none left): the pacer
        # holds a slot for this page `wait` seconds from now, so the page is read then.
        return replace(state, list_paced=True,
                       due=cadence.next_time(now, r.wait, None, state.deadline))
    sent = not isinstance(r, ArmFailure) or r.sent
    state = replace(state, arm_requests=state.arm_requests + int(sent), list_paced=False)
    if isinstance(r, ArmFailure) or lro.is_transient(r.status):
        failures = state.list_failures + 1
        if failures > MAX_LIST_FAILURES:
            raise ResolveFailed("ListUnavailable", f"listing the caches failed {failures} times "
                                f"in a row (last: {_what(r)})")
        after = r.retry_after if isinstance(r, ArmFailure) else lro.retry_after(r.headers, now)
        delay = cadence.retry_delay(failures, f"{state.origin.request_id}:list")
        return replace(state, list_failures=failures,
                       due=cadence.next_time(now, delay, after, state.deadline))
    call, selector = state.pending_lists[0], state.selector
    if r.status != 200:
        # the kind is named: an identity without Managed Redis roles (infra/README.md,
        # managedRedisAccess none) is refused only the redisEnterprise listing
        detail = error_detail(r.body) or {}
        raise ResolveFailed(text_or_none(detail.get("code")) or f"Http{r.status}",
                            f"listing the {call.kind} caches: "
                            f"{text_or_none(detail.get('message')) or _what(r)}")
    assert selector is not None
    page = read_page(selector, call.kind, r.body, databases_of=call.of)
    if page.problem:
        raise ResolveFailed(page.problem, "a list page was not the JSON ARM sends "
                                          "({\"value\": [...]})")
    pending = list(state.pending_lists[1:])
    if page.next_link:
        link = with_api_version(lro._absolute(page.next_link, call.url), call.url)
        if link == call.url:
            raise ResolveFailed("ListLoop", "ARM's list linked a page to itself")
        if not lro.is_trusted(link, endpoint):
            raise ResolveFailed("UntrustedNextLink", f"ARM's list pointed at "
                                f"{lro.redact_url(link)}, which is not the configured ARM "
                                "endpoint's scheme, host and port; no token was sent there")
        pending.insert(0, ListCall(call.kind, link, call.of))
    for cluster in page.clusters:
        path = database_list_path(cluster)
        pending.append(ListCall(ENTERPRISE, f"{endpoint}{path}?api-version="
                                            f"{quote(enterprise_api_version, safe='')}", cluster))
    pages = state.pages + 1
    if pages >= MAX_PAGES and pending:
        raise ResolveFailed("ListTooLong", f"listing the caches took more than {MAX_PAGES} "
                                           "pages")
    # one cache once, whatever case a page spells its id in (ARM compares ids without case;
    # the first spelling is kept)
    seen: dict[str, str] = {}
    for resource_id in state.found + tuple(t.resource_id for t in page.targets):
        seen.setdefault(resource_id.lower(), resource_id)
    found = tuple(seen.values())
    if len(found) > max_targets:
        found, pending = found[:max_targets + 1], []
    state = replace(state, pending_lists=tuple(pending), found=found, pages=pages,
                    ignored=state.ignored + page.ignored, list_failures=0, due=now)
    _check_carried(state)
    return state


def _check_carried(state: RunState) -> None:
    """ResolveFailed when what is left to list (a nextLink of hundreds of KB, the database
    lists of hundreds of matching clusters) could not be carried on to a later step: its
    poll message would pass the limit Service Bus refuses (the request was dead-lettered
    with no event). Nothing is flushed before a selector is resolved, so the request ends
    Failed, saying why (docs/design.md, "Poll message")."""
    size = len(state.to_json())
    if size <= CARRIED_BYTES:
        return
    links = max((len(c.url) for c in state.pending_lists), default=0)
    raise ResolveFailed("ListTooLarge", f"what is left of the listing ({len(state.pending_lists)} "
                        f"list pages to read, the longest URL {links} characters) makes "
                        f"{size} bytes of state, over the {CARRIED_BYTES} a poll message "
                        "carries; nothing was flushed (narrow the selector, e.g. by resource "
                        "group or tags)")


def with_api_version(link: str, page_url: str) -> str:
    """A nextLink without `api-version` gets the one of the page it came from, which ARM needs
    on every request (MissingApiVersionParameter otherwise), as Azure's SDKs do on every next
    page; a nextLink that has one is followed verbatim (docs/design.md, "What ARM really
    does", Listing)."""
    try:
        if _api_version(urlsplit(link).query) is not None:
            return link
        version = _api_version(urlsplit(page_url).query)
    except ValueError:
        return link  # unparseable: the trust check refuses it
    if version is None:
        return link
    head, mark, fragment = link.partition("#")
    joiner = "" if head.endswith(("?", "&")) else "&" if "?" in head else "?"
    return f"{head}{joiner}api-version={quote(version, safe='')}{mark}{fragment}"


def _api_version(query: str) -> str | None:
    return next((v for k, v in parse_qsl(query, keep_blank_values=True)
                 if k.lower() == "api-version"), None)


def _what(r: ArmAnswer | ArmFailure) -> str:
    return r.code if isinstance(r, ArmFailure) else f"HTTP {r.status}"
