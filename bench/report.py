"""The markdown report: headline figures, targets (met or missed, by how much and why), tables."""
from __future__ import annotations

import datetime as dt
from typing import Any

from common import Section


def _table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    head, *body = rows
    width = len(head)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in body]
    return "\n".join(lines)


def _interval(v: dict[str, Any]) -> str:
    return f" [{v['median_lo']:.2f}-{v['median_hi']:.2f}]" if "median_lo" in v else ""


def _said(ok: bool | None, v: dict[str, Any]) -> str:
    """A lag verdict naming what missed, and whether the median's side of it is within the
    run's sampling (its 95% interval spans 0.5 s: a run of the same size may come out on the
    other side)."""
    missed = [name for name, bad in (
        ("median", v["median"] > 0.5), ("max", v["max"] > 1.0),
        ("reads/s", v.get("max_rate", 0.0) > 1.0),
        ("outcome", v.get("ok", v["n"]) != v["n"])) if bad]
    word = "MISSED: " + ", ".join(missed) if missed else "met"
    if not ok and not missed:
        word = "MISSED"
    if v.get("median_lo", 1.0) <= 0.5 < v.get("median_hi", 0.0):
        word += " (the median's 95% interval spans 0.5 s: its side of 0.5 s is this run's " \
                "sampling)"
    return word


def _targets(by: dict[str, Section]) -> list[list[str]]:
    rows = [["target", "measured", "verdict"]]
    s1 = by.get("1")
    if s1:
        for d in s1.data["durations"]:
            o = s1.data["rows"].get(f"ours|{d:g}")
            if not o:
                continue
            ok = s1.data["verdicts"].get(f"{d:g}")
            rows.append([f"{d:g} s flush alone: lag median <= 0.5 s, max <= 1.0 s, <= 1 read/s",
                         f"{o['median']:.2f}{_interval(o)} / {o['max']:.2f} s, "
                         f"{o['max_rate']:.2f} reads/s (n={o['n']}; worst case the cadence "
                         f"allows {o['max_gap'] + o['deliver']:.2f} s)", _said(ok, o)])
        for d in s1.data["durations"]:
            o = s1.data["rows"].get(f"ours_pc|{d:g}")
            if not o:
                continue
            ok = s1.data.get("verdicts_pc", {}).get(f"{d:g}")
            rows.append([f"{d:g} s flush alone, ARM giving percentComplete (not the recorded "
                         "shape): the same", f"{o['median']:.2f}{_interval(o)} / "
                         f"{o['max']:.2f} s, {o['max_rate']:.2f} reads/s (n={o['n']})",
                         _said(ok, o)])
    s2 = by.get("2")
    if s2:
        for r, bound in zip(s2.data["runs"], s2.data["bounds"], strict=False):
            who = f"second client at {r['load']:g} reads/s" if r["load"] else "alone"
            ratio = r["wall"] / bound
            rows.append([f"fleet of {s2.data['n']:,} ({who}): last event <= 1.02x bound",
                         f"{ratio:.3f}x ({r['wall']:.1f} s vs {bound:.1f} s)",
                         "met" if ratio <= 1.02 else "MISSED"])
            rows.append([f"fleet of {s2.data['n']:,} ({who}): 0 429s", str(r["throttled"]),
                         "met" if r["throttled"] == 0 else "MISSED"])
    s3 = by.get("3")
    if s3:
        issue = s3.data["issue_baseline"]
        base = s3.data["baselines"][issue]
        rows.append([f"CPU per flush of the serve process cut at least in half (against the "
                     f"serve when the issue was filed, {issue}, same workload, same run)",
                     f"{base['per']:.2f} -> {s3.data['per']:.2f} ms ({base['ratio']:.2f}x; "
                     f"{base['ratio_req']:.2f}x per ARM request, {base['reqs']:.0f} -> "
                     f"{s3.data['reqs']:.0f} requests per flush)",
                     "met" if base["ratio"] <= 0.5 else "MISSED"])
    return rows


def render(sections: list[Section], *, machine: dict[str, str], command: str, quick: bool,
           when: dt.datetime, elapsed: float, plot: str | None, findings: list[str]) -> str:
    by = {s.title.split(".")[0]: s for s in sections}
    out = ["# Benchmarks", ""]
    out.append(f"`{command}`, {when:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s"
               + (" (**--quick**: fewer durations and samples, a smaller fleet, sections "
                  "side by side)" if quick else "") + f". Machine: {machine['cpu']}, "
               f"{machine['cores']} cores, Python {machine['python']}, {machine['os']}. "
               f"{machine.get('load', 'Load: not sampled.')}")
    out += ["", "## Headline figures", ""]
    for s in sections:
        out += [f"- {line}" for line in s.headline]
    out += ["", "## Setup", "",
            "Everything runs on this machine: the ARM emulator (the CLI's `python -m redisflush "
            "emulator` started through `bench/armemu.py`, which adds a trace of every request "
            "and each operation's end; recorded ARM shape: 202 with no Retry-After, then 202 "
            "InProgress / 200 Succeeded) in its own process; the app as `python -m redisflush "
            "serve --local --arm-endpoint ...` on the local SQLite bus and ledger, default "
            "concurrency; the Azure SDK way (azure-mgmt-redis "
            "`begin_flush_cache(...).result()`, a stub credential) in the benchmark process or "
            "a child of it. Absolute figures and ratios come from the same run. Other work on "
            "the same machine (other engineers' test runs) may share the cores during a run: "
            "the figures are what this run saw, and the line above says how much CPU work "
            "outside this container took and how long tasks waited for a core or for IO "
            "(bench/machine_load.py)."]
    rows = _targets(by)
    if len(rows) > 1:
        out += ["", "## Targets", "", _table(rows)]
    if findings:
        out += ["", "## Why a target is missed, and what would fix it", ""]
        out += findings
    for s in sections:
        out += ["", f"## {s.title}", "", _table(s.table)]
        for name in ("extra", "extra2"):
            extra = getattr(s, name, None)
            if extra:
                out += ["", _table(extra)]
        if s.title.startswith("1.") and plot:
            out += ["", f"![Lag against flush duration]({plot})"]
        if s.notes:
            out.append("")
            out += [f"- {n}" for n in s.notes]
    out += ["", "## Reproduce", "", f"`{command}` (needs requirements-dev.txt in `.venv`; "
            "`--quick` runs in under a minute and writes .redisflush/benchmarks-quick.md, "
            "`--keep` keeps the logs and traces, `--only 1,2` runs some sections; py-spy in "
            "`.venv` adds the CPU breakdown). Code: `bench/`.", ""]
    return "\n".join(out)


def data_of(sections: list[Section]) -> dict[str, Any]:
    return {s.title: s.data for s in sections}
