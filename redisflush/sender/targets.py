"""`send`'s TARGET flags -> the request body's target fields (docs/design.md, "CLI").

Exactly one form: `--resource-id` (repeatable), a classic cache by parts (`--cache`), a
Managed Redis database by parts (`--cluster`), or a selector (`--tag`/`--all`). Mixed or
incomplete forms are a `UsageError` naming the flags, before anything is validated or sent;
an empty value is refused, never taken for a flag left out (README, "CLI"); the values
themselves are checked by the app's own parser (`sender.prepare`).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .argtypes import given
from .errors import UsageError

KINDS = {"redis": "redis", "redisenterprise": "redisEnterprise"}
FORMS = ("--resource-id ID, --subscription S --resource-group G --cache C, "
         "--subscription S --resource-group G --cluster C, or a selector --subscription S "
         "[--resource-group G] with --tag K=V or --all")


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """The TARGET flags of `send`."""
    one = parser.add_argument_group(
        "what to flush (one form)",
        "--resource-id ID [--resource-id ID ...] | --subscription S --resource-group G "
        "--cache C | --subscription S --resource-group G --cluster C [--database D] "
        "[--linked-id ID ... | --no-linked] | --subscription S [--resource-group G] "
        "(--tag K=V ... | --all) [--kind KIND ...]")
    one.add_argument("--resource-id", action="append", metavar="ID", type=given,
                     help="a cache or Managed Redis database resource id; repeat for several")
    one.add_argument("--subscription", metavar="S", type=given,
                     help="subscription id (GUID)")
    one.add_argument("--resource-group", metavar="G", type=given,
                     help="resource group name")
    one.add_argument("--cache", metavar="C", type=given,
                     help="Azure Cache for Redis name")
    one.add_argument("--cluster", metavar="C", type=given,
                     help="Azure Managed Redis cluster name")
    one.add_argument("--database", metavar="D", type=given,
                     help="its database (default: default)")
    one.add_argument("--linked-id", action="append", metavar="ID", type=given,
                     help="a linked database to flush with it (default: its geo-replication "
                     "group as ARM lists it); repeatable")
    one.add_argument("--no-linked", action="store_true",
                     help="flush that database alone (linkedDatabaseIds: [])")
    one.add_argument("--tag", action="append", metavar="K=V", type=tag,
                     help="selector: caches whose tags include K=V; repeatable (all must match)")
    one.add_argument("--all", action="store_true",
                     help="selector: every cache in the subscription or resource group")
    one.add_argument("--kind", action="append", type=kind, metavar="KIND",
                     help="selector: redis or redisEnterprise (default: both); repeatable")


def tag(text: str) -> tuple[str, str]:
    """`K=V` (V may be empty; the first '=' splits)."""
    name, sep, value = given(text).partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not K=V")
    return name, value


def kind(text: str) -> str:
    try:
        return KINDS[given(text).lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not redis or redisEnterprise") \
            from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _present(args: argparse.Namespace, name: str) -> bool:
    """Whether a flag was given. Presence, never truthiness, picks the form: an empty value
    (which `given` already refuses at parse time) is an error here too, so it can never read
    as a flag left out and widen the flush (README, "CLI")."""
    value = getattr(args, name, None)
    if isinstance(value, str) and not value.strip():
        raise UsageError(f"{_flag(name)} must not be empty or only spaces")
    return value is not None and value is not False and value != []


def _given(args: argparse.Namespace, *names: str) -> list[str]:
    return [_flag(n) for n in names if _present(args, n)]


def _refuse(form: str, args: argparse.Namespace, *names: str) -> None:
    extra = _given(args, *names)
    if extra:
        raise UsageError(f"{form} cannot be combined with {', '.join(extra)}")


def _need(form: str, args: argparse.Namespace, *names: str) -> None:
    missing = [_flag(n) for n in names if not _present(args, n)]
    if missing:
        raise UsageError(f"{form} needs {' and '.join(missing)}")


def target_body(args: argparse.Namespace) -> dict[str, Any]:
    """The target part of the request body for the flags given."""
    if _present(args, "resource_id"):
        _refuse("--resource-id", args, "subscription", "resource_group", "cache", "cluster",
                "database", "tag", "all", "kind")
        ids: list[str] = args.resource_id
        if len(ids) > 1:
            _refuse("several --resource-id", args, "linked_id", "no_linked")
            return {"resourceIds": ids}
        return {"resourceId": ids[0], **_linked(args)}
    if _present(args, "cache"):
        _refuse("--cache", args, "cluster", "database", "linked_id", "no_linked", "tag", "all",
                "kind")
        _need("--cache", args, "subscription", "resource_group")
        return {"subscriptionId": args.subscription, "resourceGroup": args.resource_group,
                "cacheName": args.cache}
    if _present(args, "cluster"):
        _refuse("--cluster", args, "tag", "all", "kind")
        _need("--cluster", args, "subscription", "resource_group")
        body = {"subscriptionId": args.subscription, "resourceGroup": args.resource_group,
                "clusterName": args.cluster}
        if _present(args, "database"):
            body["databaseName"] = args.database
        return {**body, **_linked(args)}
    if _present(args, "tag") or _present(args, "all"):
        return {"selector": _selector(args)}
    for flag, form in (("database", "--cluster"), ("linked_id", "--cluster or one "
                       "--resource-id"), ("no_linked", "--cluster or one --resource-id"),
                       ("kind", "a selector (--tag K=V or --all)")):
        if _present(args, flag):
            raise UsageError(f"--{flag.replace('_', '-')} needs {form}")
    raise UsageError(f"the cache is required: {FORMS}")


def _linked(args: argparse.Namespace) -> dict[str, Any]:
    if args.linked_id and args.no_linked:
        raise UsageError("--linked-id cannot be combined with --no-linked")
    if args.no_linked:
        return {"linkedDatabaseIds": []}
    return {"linkedDatabaseIds": list(args.linked_id)} if args.linked_id else {}


def _selector(args: argparse.Namespace) -> dict[str, Any]:
    _refuse("a selector (--tag/--all)", args, "database", "linked_id", "no_linked")
    if args.tag and args.all:
        raise UsageError("--tag cannot be combined with --all (give one)")
    _need("a selector (--tag/--all)", args, "subscription")
    selector: dict[str, Any] = {"subscriptionId": args.subscription}
    if _present(args, "resource_group"):
        selector["resourceGroup"] = args.resource_group
    if args.tag:
        selector["tags"] = _tags(args.tag)
    else:
        selector["all"] = True
    if args.kind:
        selector["kinds"] = list(dict.fromkeys(args.kind))
    return selector


def _tags(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Tag names compare case-insensitively in Azure: one value per name."""
    tags: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, value in pairs:
        first = seen.setdefault(name.lower(), name)
        if first in tags and tags[first] != value:
            raise UsageError(f"--tag {name}: given twice with different values")
        tags[first] = value
    return tags
