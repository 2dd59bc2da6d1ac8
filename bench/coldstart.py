"""Section 4: cold start, as whole fresh interpreters (`python -c "import ..."`) from the app root.

Each function folder's `__init__` is what the Python worker imports on a cold start. The
comparison is the SDK stack an SDK-based function would import instead (azure.identity +
azure.mgmt.redis), and, because every function imports azure.functions, the SDK stack with it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from common import ROOT, Section, median

CASES = [
    ("bare interpreter", "pass"),
    ("azure.functions alone (the worker has it loaded already)", "import azure.functions"),
    ("FlushTrigger (`import FlushTrigger`)", "import FlushTrigger"),
    ("PollOrchestrator (`import PollOrchestrator`)", "import PollOrchestrator"),
    ("SDK stack (`import azure.identity, azure.mgmt.redis`)",
     "import azure.identity, azure.mgmt.redis"),
    ("SDK-based function (`import azure.functions, azure.identity, azure.mgmt.redis`)",
     "import azure.functions, azure.identity, azure.mgmt.redis"),
]


def _once(code: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run(repeats: int) -> Section:
    for _, code in CASES:  # one unmeasured run each: bytecode caches written, files in page cache
        _once(code)
    samples: dict[str, list[float]] = {code: [] for _, code in CASES}
    for _ in range(repeats):  # interleaved, so drift hits every case alike
        for _, code in CASES:
            samples[code].append(_once(code))
    med = {code: median(v) for code, v in samples.items()}
    sdk = med["import azure.identity, azure.mgmt.redis"]
    sdk_fn = med["import azure.functions, azure.identity, azure.mgmt.redis"]
    s = Section("4. Cold start (fresh interpreter, whole process)")
    s.table = [["what is imported", "median", "min-max", "vs SDK stack", "vs SDK-based function"]]
    for label, code in CASES:
        v = samples[code]
        s.table.append([label, f"{med[code] * 1000:.0f} ms",
                        f"{min(v) * 1000:.0f}-{max(v) * 1000:.0f} ms",
                        f"{med[code] / sdk:.2f}x", f"{med[code] / sdk_fn:.2f}x"])
    s.notes = [f"Median of {repeats} interleaved runs of `{os.path.basename(sys.executable)} -c "
               "\"...\"` from the app root after one unmeasured warm-up run each (warm page "
               "cache and bytecode: a warm-disk cold start, not a first-ever one). Every "
               "function folder imports azure.functions (the worker's binding types), so the "
               "last row is what an SDK-based function would import. In Azure the Python worker "
               "has azure.functions loaded before it imports a function, so a function's own "
               "share is its row minus the azure.functions row."]
    ft = med["import FlushTrigger"]
    s.headline = [f"Cold start: `import FlushTrigger` {ft * 1000:.0f} ms vs SDK stack "
                  f"{sdk * 1000:.0f} ms ({ft / sdk:.2f}x) and an SDK-based function "
                  f"{sdk_fn * 1000:.0f} ms ({ft / sdk_fn:.2f}x), whole process, median."]
    s.data = med
    return s
