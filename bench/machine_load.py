"""How busy the machine was while the benchmark ran, so a reader can tell a quiet run from
one that shared its cores.

Sampled every 5 s:
- the 1-minute load average (it also counts tasks blocked outside this container, so on a
  shared host it can read in the hundreds while the cores are idle: context, not a verdict);
- CPU taken by processes not visible from here, i.e. outside this container (the machine's
  busy time in /proc/stat minus the user + system time of every visible process, reaped
  children included; other work inside the container counts as the benchmark's);
- CPU and IO pressure (/proc/pressure, "some avg10": the share of time at least one task
  waited for a core, or for IO), which the benchmark's own work raises too.

The report warns when other work took a quarter of a core or more on average, or when
tasks waited on IO a quarter of the time: figures from such a run are not comparable.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

OTHERS_LIMIT = 0.25   # cores of CPU taken by processes the benchmark cannot see, mean
IO_LIMIT = 25.0       # % of time some task waited on IO, mean


def _machine_busy() -> int:
    """Busy jiffies of the whole machine (every core), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def _visible_cpu() -> int:
    """user + system jiffies of every process visible here, with their reaped children's."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        total += sum(int(f) for f in fields[11:15])
    return total


def _pressure(kind: str) -> float | None:
    try:
        line = Path(f"/proc/pressure/{kind}").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return float(dict(p.split("=") for p in line.split()[1:])["avg10"])


class LoadWatch:
    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.load: list[float] = []
        self.others: list[float] = []
        self.cpu: list[float] = []
        self.io: list[float] = []
        self._hz = os.sysconf("SC_CLK_TCK")
        self._last = (_machine_busy(), _visible_cpu())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            busy, ours = _machine_busy(), _visible_cpu()
            # a process that exited unreaped since the last sample takes its time with it:
            # never below zero, and a small share of a core is noise
            self.others.append(max(0.0, (busy - self._last[0]) - (ours - self._last[1]))
                               / self._hz / self.every)
            self._last = (busy, ours)
            self.load.append(os.getloadavg()[0])
            for kind, into in (("cpu", self.cpu), ("io", self.io)):
                value = _pressure(kind)
                if value is not None:
                    into.append(value)

    def stop(self) -> str:
        """One sentence for the report's header, with a bold warning when the run shared
        its machine enough to make its timings incomparable."""
        self._stop.set()
        self._thread.join(timeout=self.every + 1)
        if not self.load:
            return "Load: not sampled (the run was shorter than one sample)."

        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs)

        parts = [f"1-minute load average mean {mean(self.load):.2f}, max {max(self.load):.2f}",
                 f"CPU taken by processes outside this container mean "
                 f"{mean(self.others):.2f} cores, max {max(self.others):.2f}"]
        if self.cpu:
            parts.append(f"CPU pressure (share of time a task waited for a core) mean "
                         f"{mean(self.cpu):.0f}%, max {max(self.cpu):.0f}%")
        if self.io:
            parts.append(f"IO pressure mean {mean(self.io):.0f}%, max {max(self.io):.0f}%")
        text = ("While it ran: " + "; ".join(parts) + " (the load average also counts tasks "
                "blocked outside this container; both pressures include the benchmark's own "
                "work).")
        busy_elsewhere = mean(self.others) >= OTHERS_LIMIT
        io_bound = bool(self.io) and mean(self.io) >= IO_LIMIT
        if busy_elsewhere or io_bound:
            why = (f"other work took {mean(self.others):.2f} cores on average"
                   if busy_elsewhere else f"tasks waited on IO {mean(self.io):.0f}% of the time")
            warning = (f"the machine was shared during this run ({why}): its timings are "
                       "slower than a quiet machine gives, the SDK sweep's above all; do not "
                       "compare it with other runs, rerun it")
            print(f"WARNING: {warning}", file=sys.stderr)
            text += f" **{warning}.**"
        return text


if __name__ == "__main__":
    # python bench/machine_load.py [SECONDS]: what the machine looks like now
    import time

    watch = LoadWatch(every=1.0)
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
    print(watch.stop())
