"""What the local host reads from the app's folder, as the Functions host does: settings
(local.settings.json under the environment), each function.json's trigger with its `%SETTING%`
names resolved, its entry point, and a timer's NCRONTAB schedule."""
from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

from ..errors import ConfigurationError
from ..logtext import not_utf8
from .worker_message import function_data_type

_NOT_NCRONTAB = re.compile(r"[LW#?]")


@dataclass(frozen=True)
class FunctionSpec:
    """One folder's serviceBusTrigger, with its queue name resolved."""

    name: str
    queue: str
    connection: str
    main: Callable[[func.ServiceBusMessage], Any]
    data_type: str = "binary"


@dataclass(frozen=True)
class TimerSpec:
    """One folder's timerTrigger: its NCRONTAB schedule (seconds first) and entry point."""

    name: str
    schedule: str
    main: Callable[[func.TimerRequest], Any]

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first scheduled time strictly after `moment` (UTC)."""
        from croniter import croniter  # local mode only: the Azure worker never needs it

        # day_or=False: NCrontab requires the day of the month AND the day of the week
        found: dt.datetime = croniter(self.schedule, moment, second_at_beginning=True,
                                      day_or=False).get_next(dt.datetime)
        return found


def _read_json(path: Path) -> Any:
    """A JSON file the Functions host reads (local.settings.json, function.json); any problem
    is one ConfigurationError naming the file (README, "CLI": one line, exit 2)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:   # a ValueError, but "not valid JSON" would mislead
        raise ConfigurationError(f"{path}: must be UTF-8 JSON ({not_utf8(exc)})") from None
    except ValueError as exc:
        raise ConfigurationError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def read_values(app_root: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """local.settings.json (else the sample) `Values`, with the environment winning, as Core
    Tools does: a setting already in the environment is not overridden by the file."""
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = app_root / name
        if path.is_file():
            doc = _read_json(path)
            raw = doc.get("Values", {}) if isinstance(doc, dict) else {}
            if not isinstance(raw, dict):
                raise ConfigurationError(f"{path}: Values must be an object")
            values = {str(k): str(v) for k, v in raw.items() if v is not None}
            break
    values.update({k: v for k, v in env.items() if k in values or k.startswith(
        ("REDISFLUSH_", "ServiceBusConnection", "AZURE_"))})
    return values


def resolve(template: object, values: Mapping[str, str], where: str) -> str:
    """`%NAME%` -> the app setting, as the host resolves binding expressions."""
    if not isinstance(template, str):
        raise ConfigurationError(f"{where}: must be a string, not {type(template).__name__}")
    if template.startswith("%") and template.endswith("%") and len(template) > 2:
        name = template[1:-1]
        value = values.get(name, "")
        if not value:
            raise ConfigurationError(f"{where}: app setting {name} is not set")
        return value
    return template


def _entry(app_root: Path, path: Path, doc: Mapping[str, Any]) -> Callable[..., Any]:
    if str(app_root) not in sys.path:
        sys.path.insert(0, str(app_root))
    folder = path.parent.name
    module = importlib.import_module(folder)
    entry = getattr(module, doc.get("entryPoint") or "main", None)
    if not callable(entry):
        raise ConfigurationError(f"{path}: {folder}/__init__.py has no main()")
    return entry  # type: ignore[no-any-return]


def _triggers(app_root: Path, kind: str) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """(function.json path, its document, its first `kind` binding) for each folder that has
    one, in folder order."""
    found = []
    for path in sorted(app_root.glob("*/function.json")):
        doc = _read_json(path)
        listed = doc.get("bindings") if isinstance(doc, dict) else None
        if not isinstance(listed, list) or not all(isinstance(b, dict) for b in listed):
            # the host refuses such a folder; here it must not silently drop a trigger
            raise ConfigurationError(f"{path}: must be an object whose \"bindings\" is a list "
                                     "of objects")
        bindings = [b for b in listed if b.get("type") == kind]
        if bindings:
            found.append((path, doc, bindings[0]))
    return found


def load_timers(app_root: Path, values: Mapping[str, str]) -> list[TimerSpec]:
    """Every folder of `app_root` whose function.json has a timerTrigger binding."""
    specs: list[TimerSpec] = []
    for path, doc, binding in _triggers(app_root, "timerTrigger"):
        # local mode only, and only once a folder has a timer (open_bus is shared with Azure)
        from croniter import croniter

        schedule = resolve(binding.get("schedule", ""), values, f"{path}: schedule").strip()
        # NCrontab's syntax: numbers, names, *, ranges, lists and steps; not Quartz's L, W, #, ?
        if len(schedule.split()) != 6 or _NOT_NCRONTAB.search(schedule) or \
                not croniter.is_valid(schedule, second_at_beginning=True):
            raise ConfigurationError(
                f"{path}: schedule {schedule!r} is not an NCRONTAB expression of six fields "
                "({second} {minute} {hour} {day} {month} {day-of-week})")
        if binding.get("runOnStartup"):
            raise ConfigurationError(f"{path}: runOnStartup is not supported (Azure runs it "
                                     "on every instance start and scale-out)")
        specs.append(TimerSpec(path.parent.name, schedule, _entry(app_root, path, doc)))
    return specs


def load_functions(app_root: Path, values: Mapping[str, str]) -> list[FunctionSpec]:
    """Every folder of `app_root` whose function.json has a serviceBusTrigger binding."""
    specs: list[FunctionSpec] = []
    for path, doc, binding in _triggers(app_root, "serviceBusTrigger"):
        if "queueName" not in binding:
            raise ConfigurationError(f"{path}: only queue triggers are supported")
        try:
            data_type = function_data_type(binding)
        except ValueError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
        queue = resolve(binding.get("queueName"), values, f"{path}: queueName")
        entry = _entry(app_root, path, doc)
        specs.append(FunctionSpec(path.parent.name, queue,
                                  binding.get("connection", "AzureWebJobsServiceBus"), entry,
                                  data_type))
    if not specs:
        raise ConfigurationError(f"{app_root}: no function.json with a serviceBusTrigger "
                                 "(is this the app root, the folder holding host.json?)")
    return specs
