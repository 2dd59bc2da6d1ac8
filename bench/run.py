"""redisflush benchmarks: `python bench/run.py` (about 5 minutes) or `--quick` (under a minute).

1. time to event for 3, 10 and 45 s flushes, against azure-mgmt-redis begin_flush_cache()
2. a fleet flush of 1,000 caches under ARM's throttling, against ThreadPoolExecutor(16) x SDK
3. CPU per invocation, and `serve --local` memory with 100 and 10,000 operations in flight
4. cold start: importing each function against importing the SDK stack

Everything runs on this machine against the ARM emulator (`python -m redisflush emulator`)
and the local bus; absolute figures and ratios come from the same run. The full run writes
docs/benchmarks.md; --quick (smaller fleet, fewer samples) writes
.redisflush/benchmarks-quick.md unless --out says otherwise, so it never replaces the
committed full-run figures.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _ensure_venv() -> None:
    """Re-run under the project's venv when the current interpreter lacks the SDK."""
    try:
        import azure.mgmt.redis  # noqa: F401
        import azure.functions  # noqa: F401
    except ImportError:
        venv = ROOT / ".venv" / "bin" / "python"
        if venv.exists() and Path(sys.prefix).resolve() != venv.parents[1].resolve():
            os.execv(str(venv), [str(venv), *sys.argv])
        raise SystemExit("bench needs the dev requirements (azure-functions, "
                         "azure-mgmt-redis): pip install -r requirements-dev.txt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="under a minute: 3 and 10 s flushes, a 300-cache fleet, fewer "
                        "samples; sections 1 and 2 run at the same time")
    parser.add_argument("--out", type=Path, help="where to write the markdown report")
    parser.add_argument("--only", help="comma list of sections to run (1,2,3,4)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    _ensure_venv()
    sys.path.insert(0, str(HERE))
    import coldstart
    import cost
    import fleet
    import report
    import tte
    from common import machine

    only = {s.strip() for s in (args.only or "1,2,3,4").split(",")}
    out = args.out or (ROOT / ".redisflush" / "benchmarks-quick.md" if args.quick
                       else ROOT / "docs" / "benchmarks.md")
    work = Path(tempfile.mkdtemp(prefix="redisflush-bench-"))
    began = time.monotonic()
    command = "python bench/run.py" + (" --quick" if args.quick else "") + \
        (f" --only {args.only}" if args.only else "")
    print(f"{command}: work folder {work}", file=sys.stderr, flush=True)
    if args.quick:
        durations, repeats = (3.0, 10.0), 1
        n = 300  # buckets' bursts scaled with the fleet, refill rates kept (same pressure)
        the_fleet = fleet.Fleet(n, 10.0, (60, 10.0), (75, 25.0))
        fleet_label = "quick: 300 caches, bursts scaled x0.3: writes 60 + 10/s, reads 75 + 25/s"
        n_cpu, small, large, hold, cold = 100, 100, 1_000, 2.0, 3
    else:
        durations, repeats = (3.0, 10.0, 45.0), 3
        the_fleet = fleet.Fleet(1000, 10.0, (200, 10.0), (250, 25.0))
        fleet_label = "1,000 caches, writes 200 + 10/s, reads 250 + 25/s"
        n_cpu, small, large, hold, cold = 500, 100, 10_000, 8.0, 7
    sections = []
    try:
        s1 = s2 = None
        if args.quick and {"1", "2"} <= only:
            # Independent caches, emulators and serve processes: run side by side.
            with cf.ThreadPoolExecutor(2) as pool:
                f1 = pool.submit(_step, "1", lambda: tte.run(work, durations, repeats))
                f2 = pool.submit(_step, "2", lambda: _fleet(fleet, work, the_fleet,
                                                            fleet_label))
                s1, s2 = f1.result(), f2.result()
        else:
            if "1" in only:
                s1 = _step("1", lambda: tte.run(work, durations, repeats))
            if "2" in only:
                s2 = _step("2", lambda: _fleet(fleet, work, the_fleet, fleet_label))
        s3 = _step("3", lambda: cost.run(work, n_cpu, small, large, hold)) if "3" in only \
            else None
        s4 = _step("4", lambda: coldstart.run(cold)) if "4" in only else None
        sections = [s for s in (s1, s2, s3, s4) if s is not None]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - began
    text = report.render(sections, machine=machine(), command=command, quick=args.quick,
                         when=dt.datetime.now(dt.timezone.utc), elapsed=elapsed)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({elapsed:.0f} s)", file=sys.stderr)
    return 0


def _step(name: str, fn):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    print(f"section {name} ...", file=sys.stderr, flush=True)
    result = fn()
    print(f"section {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr,
          flush=True)
    return result


def _fleet(fleet, work, the_fleet, label):  # type: ignore[no-untyped-def]
    """Ours to the last event, with the SDK threads running alongside for the same window."""
    bound, why = the_fleet.lower_bound()
    sdk = fleet.SdkFleet(work, the_fleet)
    sdk.start()
    try:
        ours = fleet.run_ours(work, the_fleet)
    finally:
        theirs = sdk.stop()
    return fleet.render(the_fleet, bound, why, ours, theirs, label)


if __name__ == "__main__":
    sys.exit(main())
