"""The local Functions host: function.json + local.settings.json -> invocations on the local bus.

It does what the Functions host and the Python worker do for a serviceBusTrigger: resolve
`%SETTING%` queue names and the connection name from the app's settings, receive with
peek-lock, hand `main` the `azure.functions.ServiceBusMessage` Azure would hand it (trigger
metadata shaped as the Service Bus extension 5.x sends it, the body typed by the binding's
`dataType`, decoded by azure-functions' own converter: `redisflush.local.worker_message`),
complete on return and abandon on exception, with a bounded number of invocations at once.
On SIGINT/SIGTERM it stops receiving and lets in-flight calls finish.
"""
from __future__ import annotations

import concurrent.futures as cf
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

from ..bus import ReceivedMessage
from ..errors import ConfigurationError
from ..functions import STRPTIME_FORMATS_KEPT as STRPTIME_FORMATS_KEPT
from ..functions import keep_strptime_formats, last_outcome
from ..logtext import printable
from .bus import LocalBus
from .worker_message import function_data_type, received_worker_message

log = logging.getLogger("redisflush.host")
IDLE_SLEEP = 0.02


@dataclass(frozen=True)
class FunctionSpec:
    """One folder's serviceBusTrigger, with its queue name resolved."""

    name: str
    queue: str
    connection: str
    main: Callable[[func.ServiceBusMessage], Any]
    data_type: str = "binary"


def read_values(app_root: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """local.settings.json (else the sample) `Values`, with the environment winning, as Core
    Tools does: a setting already in the environment is not overridden by the file."""
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = app_root / name
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ConfigurationError(f"{path}: not valid JSON ({exc})") from None
            raw = doc.get("Values", {}) if isinstance(doc, dict) else {}
            if not isinstance(raw, dict):
                raise ConfigurationError(f"{path}: Values must be an object")
            values = {str(k): str(v) for k, v in raw.items() if v is not None}
            break
    values.update({k: v for k, v in env.items() if k in values or k.startswith(
        ("REDISFLUSH_", "ServiceBusConnection", "AZURE_"))})
    return values


def resolve(template: str, values: Mapping[str, str], where: str) -> str:
    """`%NAME%` -> the app setting, as the host resolves binding expressions."""
    if template.startswith("%") and template.endswith("%") and len(template) > 2:
        name = template[1:-1]
        value = values.get(name, "")
        if not value:
            raise ConfigurationError(f"{where}: app setting {name} is not set")
        return value
    return template


def load_functions(app_root: Path, values: Mapping[str, str]) -> list[FunctionSpec]:
    """Every folder of `app_root` whose function.json has a serviceBusTrigger binding."""
    specs: list[FunctionSpec] = []
    if str(app_root) not in sys.path:
        sys.path.insert(0, str(app_root))
    for path in sorted(app_root.glob("*/function.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigurationError(f"{path}: not valid JSON ({exc})") from None
        triggers = [b for b in doc.get("bindings", []) if b.get("type") == "serviceBusTrigger"]
        if not triggers:
            continue
        binding = triggers[0]
        if "queueName" not in binding:
            raise ConfigurationError(f"{path}: only queue triggers are supported")
        try:
            data_type = function_data_type(binding)
        except ValueError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
        folder = path.parent.name
        module = importlib.import_module(folder)
        entry = getattr(module, doc.get("entryPoint") or "main", None)
        if not callable(entry):
            raise ConfigurationError(f"{path}: {folder}/__init__.py has no main()")
        specs.append(FunctionSpec(folder, resolve(binding["queueName"], values, str(path)),
                                  binding.get("connection", "AzureWebJobsServiceBus"), entry,
                                  data_type))
    if not specs:
        raise ConfigurationError(f"{app_root}: no function.json with a serviceBusTrigger "
                                 "(is this the app root, the folder holding host.json?)")
    return specs


def binding_message(msg: ReceivedMessage, *, data_type: str = "binary",
                    function_name: str = "") -> func.ServiceBusMessage:
    """What the Python worker passes to main in Azure, from the broker's view of the message
    (so no LockedUntil or ScheduledEnqueueTimeUtc, and EnqueuedTimeUtc without offset)."""
    return received_worker_message(msg, data_type=data_type, function_name=function_name)


class LocalHost:
    """Receive from each function's queue and invoke it, `concurrency` calls at most."""

    def __init__(self, bus: LocalBus, functions: list[FunctionSpec], *,
                 concurrency: int = 8) -> None:
        self.bus = bus
        self.functions = functions
        self.concurrency = max(1, concurrency)
        self.stopping = threading.Event()
        self.invocations = 0
        self._count_lock = threading.Lock()
        # Like maxConcurrentCalls: each function's listener has its own slots, so a flood of
        # requests cannot starve the polls of the operations already running.
        self._slots = {spec.name: threading.Semaphore(self.concurrency) for spec in functions}
        self._pool = cf.ThreadPoolExecutor(self.concurrency * len(functions),
                                           thread_name_prefix="invoke")
        keep_strptime_formats()

    def run(self) -> None:
        """Until `stop()`: receive what is due and dispatch it; then drain in-flight calls."""
        try:
            while not self.stopping.is_set():
                if not self._dispatch_once():
                    self.stopping.wait(IDLE_SLEEP)
        finally:
            self._pool.shutdown(wait=True)

    def stop(self) -> None:
        self.stopping.set()

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
            spec.main(binding_message(message, data_type=spec.data_type,
                                      function_name=spec.name))
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
