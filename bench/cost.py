"""Section 5: what one flush costs in Service Bus operations, function executions and money.

Counted from section 1's runs: ours = one FlushTrigger execution, then one PollOrchestrator
execution per status read (each schedules the next, the last publishes the event); the SDK
way = one function execution that holds `begin_flush_cache(...).result()` open for the whole
flush. Service Bus operations are counted one per message sent, received and completed (the
meter counts API calls; a batched receive costs fewer, so this is the upper end).
"""
from __future__ import annotations

import math
from typing import Any

from common import Section

# List prices, USD, pay-as-you-go, East US (see PRICES_NOTE for where each comes from).
FLEX_GB_S = 0.000026          # Flex Consumption on-demand execution time, per GB-s
FLEX_PER_MILLION = 0.40       # Flex Consumption on-demand executions, per million
FLEX_MEMORY_GB = 2.048        # default instance memory (2,048 MB)
SB_PER_MILLION = 0.80         # Service Bus Standard operations, 13M-100M a month, per million
SB_BASE_HOUR = 0.0135         # Service Bus Standard base charge per hour (13M ops included)
PRICES_NOTE = (
    "Prices (USD, pay-as-you-go, East US): Flex Consumption on-demand $0.000026 per GB-s "
    "and $0.40 per million executions (free grant 100,000 GB-s and 250,000 executions a "
    "month, not deducted here), from the Azure Functions pricing page as quoted in "
    "modal.com's guide of 2025-05-22; Service Bus Standard $0.0135 an hour base (about "
    "$10/month, 13M operations a month included) and $0.80 per million operations from 13M "
    "to 100M a month, from the Service Bus pricing page as last read in 2025 (the stored "
    "copy available to this benchmark shows the tiers - 13M included, 13M-100M, "
    "100M-2,500M - but not the USD amounts; azure.cn lists CNY 5.21 per million for the "
    "same tier). Check both pages before quoting: prices change and vary by region.")


# Not measured here: each execution of ours waits in Azure for ARM (tens of ms; the emulator
# answers on loopback in ~1 ms) and for Service Bus's send and complete (the local bus is a
# SQLite file). The "in Azure" column adds this much per execution, an assumption.
AZURE_WAIT_S = 0.07


FLEX_MIN_S = 1.0     # Flex bills an activity period of at least 1 s, then by 100 ms
PHI_MEAN = 0.5       # section 1's flushes last d + phi, phi spread over [0, 1)
# Executions in progress at once on one busy instance (Flex bills the instance's time, not each
# execution's, so C executions at once share it); host.json's maxConcurrentCalls is 16.
SHARED = (1, 2, 4, 8, 16, 32)


def flex_seconds(held: float) -> float:
    """One billed activity period on Flex Consumption: at least 1 s, then rounded up to
    100 ms (the Functions docs, "Billing" of the Flex Consumption plan)."""
    return max(FLEX_MIN_S, math.ceil(round(held * 10, 6)) / 10)


def _ours(v: dict[str, Any]) -> dict[str, float]:
    execs = v["executions"] or (1 + v["reads"])
    ops = 1 + 2 * execs + (execs - 1) + 1          # send request; receive+complete each;
    gb_s = v["exec_ms"] / 1000 * FLEX_MEMORY_GB      # schedule each next poll; publish event
    return {"execs": execs, "ops": ops, "gb_s": gb_s,
            "azure_gb_s": gb_s + execs * AZURE_WAIT_S * FLEX_MEMORY_GB,
            # a flush alone: its executions come about a second apart, so each is a billed
            # period of its own
            "flex_gb_s": execs * FLEX_MIN_S * FLEX_MEMORY_GB}


def _sdk(v: dict[str, Any], d: float) -> dict[str, float]:
    held = d + PHI_MEAN + v["median"]                # the execution waits for .result()
    return {"execs": 1, "ops": 4, "held": held,
            "flex_gb_s": flex_seconds(held) * FLEX_MEMORY_GB,
            # on an instance busy anyway: the time held, no activity period of its own
            "busy_gb_s": held * FLEX_MEMORY_GB}


def _money(c: dict[str, float], billing: str = "flex_gb_s", shared: float = 1.0) -> float:
    """USD per flush; `shared`: executions in progress at once on the instance, which split
    its GB-s (the executions and Service Bus operations do not shrink)."""
    return _fixed(c) + c[billing] * FLEX_GB_S / shared


def _fixed(c: dict[str, float]) -> float:
    """The part of a flush's cost that no sharing of an instance makes smaller."""
    return c["execs"] * FLEX_PER_MILLION / 1e6 + c["ops"] * SB_PER_MILLION / 1e6


def break_even(ours: dict[str, float], ours_billing: str, sdk: dict[str, float],
               sdk_billing: str = "busy_gb_s") -> float | None:
    """The executions at once C above which the SDK way costs less on a busy instance:
    ours' fixed part is larger (3 Service Bus operations and an execution per poll) and its
    time per flush smaller, so the two lines a + b/C cross once (None if they never do)."""
    a_o, b_o = _fixed(ours), ours[ours_billing] * FLEX_GB_S
    a_s, b_s = _fixed(sdk), sdk[sdk_billing] * FLEX_GB_S
    if a_o <= a_s or b_s <= b_o:
        return None
    return (b_s - b_o) / (a_o - a_s)


def run(lag: Section) -> Section:
    rows = lag.data["rows"]
    s = Section("5. Service Bus operations, function executions and cost per flush")
    s.table = [["flush takes", "ours: executions / SB operations / ARM requests",
                "ours: $ per 1,000 flushes alone on Flex (each execution a 1 s billed period)",
                "SDK interval=2 in a function: held / $ per 1,000 (ARM requests)",
                "SDK interval=1: held / $ per 1,000 (ARM requests)",
                "SDK default: held / $ per 1,000",
                "ours on an instance never idle, one execution on it at a time: $ per 1,000 "
                f"with the executions' loopback time / with {AZURE_WAIT_S * 1000:.0f} ms of "
                "Azure waits each (assumed)"]]

    def sdk_cell(v: dict[str, Any] | None, d: float, requests: bool = True) -> str:
        if not v:
            return "-"
        c = _sdk(v, d)
        return (f"{flex_seconds(c['held']):.1f} s / ${_money(c) * 1000:.3f}"
                + (f" ({v['requests']:g})" if requests else ""))

    for d in lag.data["durations"]:
        o = rows.get(f"ours|{d:g}")
        if not o:
            continue
        c = _ours(o)
        s.table.append([
            f"{d:g} s", f"{c['execs']:g} / {c['ops']:g} / {o['requests']:g}",
            f"${_money(c) * 1000:.3f}",
            sdk_cell(rows.get(f"sdk2|{d:g}"), d), sdk_cell(rows.get(f"sdk1|{d:g}"), d),
            sdk_cell(rows.get(f"sdk|{d:g}"), d, requests=False),
            f"${_money(c, 'gb_s') * 1000:.4f} / ${_money(c, 'azure_gb_s') * 1000:.3f}"])
    s.notes = [
        "Ours per flush: executions = FlushTrigger + one PollOrchestrator per status read "
        "(counted per request in the serve log); Service Bus operations = the request's send, "
        "a receive and a complete per execution, the scheduled next poll of every execution "
        "but the last, and the event's publish (3 x executions + 1; a subscriber's receive "
        "and complete of the event add 2 on either side). Each poll of ours therefore costs "
        "1 execution and 3 Service Bus operations. The SDK way: one execution holding "
        "`begin_flush_cache(...).result()` for the flush (d + its mean phi of 0.5 s) plus its "
        "lag, and 4 Service Bus operations.",
        "Money: executions x $0.40/M + GB-s x $0.000026 + Service Bus operations x $0.80/M "
        "(marginal, past the 13M operations a month the base charge includes), 2,048 MB "
        "instances. Flex Consumption bills the time an instance is executing, each activity "
        "period at least 1 s and then rounded up to 100 ms, executions that overlap on one "
        "instance counted once. For one flush alone that is the first columns: ours' "
        "executions come a second apart, so each is billed a full second, and ours costs "
        "somewhat more than an SDK call held in a function at polling_interval=2 or 1 (which "
        "also detects the end within a second or two, as section 1 shows). The last column "
        "is not a Flex meter: it is ours on an instance that never idles (a fleet, other "
        "work) when its executions never overlap there, each execution's own time billed at "
        "the whole instance, measured on loopback (ARM answers in ~1 ms, the bus and ledger "
        f"are SQLite files) and with an assumed {AZURE_WAIT_S * 1000:.0f} ms of Azure waits "
        "per execution.",
        "A busy instance shared (the second table): with C executions in progress at once "
        "the instance's time is split C ways, for ours and for the SDK's held executions "
        "alike; the executions and Service Bus operations are not. Ours has the larger part "
        "that does not shrink (1 execution and 3 Service Bus operations per poll, against "
        "1 execution and 4 operations per flush) and the smaller time (short executions "
        "against one held for the whole flush), so the SDK way costs less above the "
        "break-even C given there. C is what the instance really runs at once (host.json's "
        "maxConcurrentCalls caps it at 16 per function for ours; an SDK function's own host "
        "settings and its worker's threads cap its held executions); this benchmark does "
        "not measure it.",
        PRICES_NOTE,
    ]
    d10 = next((d for d in lag.data["durations"] if d == 10), lag.data["durations"][-1])
    o, a, b, one = (rows.get(f"{w}|{d10:g}") for w in ("ours", "sdk", "sdk2", "sdk1"))
    even1: float | None = None
    if o and b and one:
        c, sb, s1 = _ours(o), _sdk(b, d10), _sdk(one, d10)
        s.extra = [
            [f"a {d10:g} s flush on an instance that never idles, C executions in progress "
             "at once: $ per 1,000",
             f"ours ({AZURE_WAIT_S * 1000:.0f} ms of Azure waits each, assumed)",
             "SDK interval=1 (held)", "SDK interval=2 (held)", "cheaper"]]
        for n in SHARED:
            mo, m1, m2 = (_money(c, "azure_gb_s", n), _money(s1, "busy_gb_s", n),
                          _money(sb, "busy_gb_s", n))
            s.extra.append([f"C = {n}", f"${mo * 1000:.3f}", f"${m1 * 1000:.3f}",
                            f"${m2 * 1000:.3f}",
                            "ours" if mo < min(m1, m2) else "the SDK way"])
        even1, even2 = (break_even(c, "azure_gb_s", x) for x in (s1, sb))
        s.extra.append(["break-even C (the SDK way cheaper above it)", "",
                        "never" if even1 is None else f"{even1:.1f}",
                        "never" if even2 is None else f"{even2:.1f}", ""])
        s.data["shared"] = {
            "ours": [_fixed(c), c["azure_gb_s"] * FLEX_GB_S],
            "sdk1": [_fixed(s1), s1["busy_gb_s"] * FLEX_GB_S],
            "sdk2": [_fixed(sb), sb["busy_gb_s"] * FLEX_GB_S],
            "break_even": {"sdk1": even1, "sdk2": even2}}
    if o and a and b and one:
        sa = _sdk(a, d10)
        s.headline = [f"Cost of a {d10:g} s flush alone on Flex Consumption (each billed "
                      f"period at least 1 s): ours {c['execs']:g} executions and "
                      f"{c['ops']:g} Service Bus operations = ${_money(c) * 1000:.3f} per "
                      f"1,000 flushes, against an SDK call held in a function "
                      f"${_money(sb) * 1000:.3f} at polling_interval=2, "
                      f"${_money(s1) * 1000:.3f} at 1, ${_money(sa) * 1000:.3f} at its "
                      f"default: ours costs {_money(c) / _money(s1):.2f}x the SDK at "
                      f"polling_interval=1. On an instance that never idles (an assumed "
                      f"{AZURE_WAIT_S * 1000:.0f} ms of Azure waits per execution), with C "
                      f"executions in progress there at once: ours "
                      f"${_fixed(c) * 1000:.4f} + ${c['azure_gb_s'] * FLEX_GB_S * 1000:.4f}/C "
                      f"per 1,000 (${_money(c, 'azure_gb_s') * 1000:.3f} at C = 1), the SDK "
                      f"at polling_interval=1 ${_fixed(s1) * 1000:.4f} + "
                      f"${s1['busy_gb_s'] * FLEX_GB_S * 1000:.4f}/C: "
                      + ("ours costs less at any C." if even1 is None else
                         f"ours costs less below C = {even1:.1f}, the SDK way above it (at "
                         f"C = {SHARED[-1]}: ours "
                         f"${_money(c, 'azure_gb_s', SHARED[-1]) * 1000:.3f}, the SDK "
                         f"${_money(s1, 'busy_gb_s', SHARED[-1]) * 1000:.3f}).")]
    s.data.update({"prices": {"flex_gb_s": FLEX_GB_S, "flex_per_million": FLEX_PER_MILLION,
                              "sb_per_million": SB_PER_MILLION}})
    return s
