"""The local Functions host: function.json + local.settings.json -> invocations on the local bus
(the folder read as the host reads it in function_folders.py).

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
import logging
import threading
import time
from collections.abc import Callable

import azure.functions as func
from azure.functions.timer import TimerRequest

from ..bus import ReceivedMessage
from ..functions import STRPTIME_FORMATS_KEPT as STRPTIME_FORMATS_KEPT
from ..functions import keep_strptime_formats, last_outcome
from ..logtext import printable
from .bus import LocalBus
from .function_folders import FunctionSpec, TimerSpec
from .worker_message import received_worker_message

log = logging.getLogger("redisflush.host")
IDLE_SLEEP = 0.02


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
        # requests cannot starve the polls of the operations already running. Free slots are
        # counted under one condition (taken all at once per receive, given back one per
        # call): a Semaphore per function cost `concurrency` acquires and releases, each a
        # Condition round in Python, on every pass of the loop (50 a second when idle).
        self._free = {spec.name: self.concurrency for spec in functions}
        self._slot_freed = threading.Condition(threading.Lock())
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

    def _take_slots(self, name: str, most: int) -> int:
        """Take up to `most` of the function's free slots; how many were taken."""
        with self._slot_freed:
            free = min(most, self._free[name])
            self._free[name] -= free
        return free

    def _give_slots(self, name: str, count: int) -> None:
        with self._slot_freed:
            self._free[name] += count
            self._slot_freed.notify()

    def _dispatch_once(self) -> bool:
        """One receive per function with free slots; False when there was nothing to do."""
        dispatched, saturated = False, True
        for spec in self.functions:
            free = self._take_slots(spec.name, self.concurrency)
            if not free:
                continue
            saturated = False
            try:
                messages = self.bus.receive(spec.queue, max_count=free)
            except Exception as exc:
                log.error("receiving from %s failed: %s", spec.queue, printable(exc, 300))
                messages = []
            if free > len(messages):
                self._give_slots(spec.name, free - len(messages))
            for message in messages:
                dispatched = True
                self._pool.submit(self._invoke, spec, message)
        if saturated:
            # every slot is taken: wait for one to come back, never spin (which would starve
            # the invocations of the GIL)
            with self._slot_freed:
                if not any(self._free.values()):
                    self._slot_freed.wait(IDLE_SLEEP)
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
            self._give_slots(spec.name, 1)
        with self._count_lock:
            self.invocations += 1
        request_id = message.application_properties.get("requestId", message.message_id)
        # A MessageId or requestId property is the sender's text: escaped, so it cannot forge
        # a log line (docs/design.md, "Security rules").
        log.info("%s request=%s message=%s delivery=%d %s %.0f ms%s", spec.name,
                 printable(request_id), printable(message.message_id), message.delivery_count,
                 printable(outcome, 500), (time.perf_counter() - started) * 1000,
                 f": {printable(decided, 500)}" if decided else "")
