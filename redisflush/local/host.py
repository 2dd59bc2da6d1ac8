"""The local Functions host: function.json + local.settings.json -> invocations on the local bus.

It does what the Functions host and the Python worker do for a serviceBusTrigger: resolve
`%SETTING%` queue names and the connection name from the app's settings, receive with
peek-lock, hand `main` the `azure.functions.ServiceBusMessage` Azure would hand it (trigger
metadata shaped as the Service Bus extension 5.x sends it, the body typed by the binding's
`dataType`, decoded by azure-functions' own converter: `redisflush.local.worker_message`),
complete on return and abandon on exception, with a bounded number of invocations at once.
A timerTrigger folder runs at its NCRONTAB schedule (six fields, seconds first, UTC, as the
host reads it; croniter computes the next time), one run at a time per function, never at
start (`runOnStartup` is refused: Azure runs it on every scale-out too).
On SIGINT/SIGTERM it stops receiving and lets in-flight calls finish.
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import importlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.timer import TimerRequest

from ..bus import ReceivedMessage
from ..errors import ConfigurationError
from ..functions import STRPTIME_FORMATS_KEPT as STRPTIME_FORMATS_KEPT
from ..functions import keep_strptime_formats, last_outcome
from ..logtext import not_utf8, printable
from .bus import LocalBus
from .worker_message import function_data_type, received_worker_message

log = logging.getLogger("redisflush.host")
IDLE_SLEEP = 0.02
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


def binding_message(msg: ReceivedMessage, *, data_type: str = "binary"
                    ) -> func.ServiceBusMessage:
    """What the Python worker passes to main in Azure, from the broker's view of the message
    (so no LockedUntil or ScheduledEnqueueTimeUtc, and EnqueuedTimeUtc without offset)."""
    return received_worker_message(msg, data_type=data_type)


class LocalHost:
    """Receive from each function's queue and invoke it, `concurrency` calls at most."""

    def __init__(self, bus: LocalBus, functions: list[FunctionSpec], *,
                 concurrency: int = 8, timers: list[TimerSpec] | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.bus = bus
        self.functions = functions
        self.timers = list(timers or [])
        self.clock = clock
        self._next: dict[str, dt.datetime] = {}
        self._running: set[str] = set()
        self.concurrency = max(1, concurrency)
        self.stopping = threading.Event()
        self.invocations = 0
        self._count_lock = threading.Lock()
        # Like maxConcurrentCalls: each function's listener has its own slots, so a flood of
        # requests cannot starve the polls of the operations already running.
        self._slots = {spec.name: threading.Semaphore(self.concurrency) for spec in functions}
        self._pool = cf.ThreadPoolExecutor(self.concurrency * len(functions) + len(self.timers),
                                           thread_name_prefix="invoke")
        keep_strptime_formats()

    def run(self) -> None:
        """Until `stop()`: receive what is due and dispatch it; then drain in-flight calls."""
        try:
            now = self.clock()
            self._next = {t.name: t.next_after(now) for t in self.timers}
            while not self.stopping.is_set():
                self._fire_due_timers()
                if not self._dispatch_once():
                    self.stopping.wait(IDLE_SLEEP)
        finally:
            self._pool.shutdown(wait=True)

    def stop(self) -> None:
        self.stopping.set()

    def _fire_due_timers(self) -> None:
        """Start each timer whose time came; a run still going when the next time comes makes
        that time pass (the host's singleton lock does the same)."""
        if not self.timers:
            return
        now = self.clock()
        for timer in self.timers:
            if now < self._next[timer.name]:
                continue
            self._next[timer.name] = timer.next_after(now)
            with self._count_lock:
                if timer.name in self._running:
                    continue
                self._running.add(timer.name)
            self._pool.submit(self._run_timer, timer)

    def _run_timer(self, timer: TimerSpec) -> None:
        started, decided = time.perf_counter(), None
        try:
            timer.main(TimerRequest(past_due=False))
        except Exception as exc:  # the host logs it; the next time runs again
            outcome = f"failed after {type(exc).__name__}: {printable(str(exc), 300)}"
        else:
            decided, outcome = last_outcome(), "completed"
        finally:
            with self._count_lock:
                self._running.discard(timer.name)
                self.invocations += 1
        log.info("%s timer %s %.0f ms%s", timer.name, outcome,
                 (time.perf_counter() - started) * 1000,
                 f": {printable(decided, 500)}" if decided else "")

    def _dispatch_once(self) -> bool:
        """One receive per function with free slots; False when there was nothing to do."""
        dispatched, saturated = False, True
        for spec in self.functions:
            slots = self._slots[spec.name]
            free = 0
            while free < self.concurrency and slots.acquire(blocking=False):
                free += 1
            if not free:
                continue
            saturated = False
            try:
                messages = self.bus.receive(spec.queue, max_count=free)
            except Exception as exc:
                log.error("receiving from %s failed: %s", spec.queue, printable(exc, 300))
                messages = []
            for _ in range(free - len(messages)):
                slots.release()
            for message in messages:
                dispatched = True
                self._pool.submit(self._invoke, spec, message)
        if saturated:
            # every slot is taken: wait for one to come back, never spin (which would starve
            # the invocations of the GIL)
            slot = self._slots[self.functions[0].name]
            if slot.acquire(timeout=IDLE_SLEEP):
                slot.release()
            return True
        return dispatched

    def _invoke(self, spec: FunctionSpec, message: ReceivedMessage) -> None:
        started, decided = time.perf_counter(), None
        try:
            spec.main(binding_message(message, data_type=spec.data_type))
        except Exception as exc:  # the host abandons: Service Bus redelivers
            outcome = f"abandoned after {type(exc).__name__}: {exc}"
            try:
                self.bus.abandon(message)
            except Exception as settle_error:
                outcome += f" (abandon failed: {settle_error})"
        else:
            decided = last_outcome()
            outcome = "completed"
            try:
                self.bus.complete(message)
            except Exception as settle_error:
                outcome = f"lock lost before completing: {settle_error}"
        finally:
            self._slots[spec.name].release()
        with self._count_lock:
            self.invocations += 1
        request_id = message.application_properties.get("requestId", message.message_id)
        # A MessageId or requestId property is the sender's text: escaped, so it cannot forge
        # a log line (docs/design.md, "Security rules").
        log.info("%s request=%s message=%s delivery=%d %s %.0f ms%s", spec.name,
                 printable(request_id), printable(message.message_id), message.delivery_count,
                 printable(outcome, 500), (time.perf_counter() - started) * 1000,
                 f": {printable(decided, 500)}" if decided else "")
