"""Section 5: what one flush costs in Service Bus operations, function executions and money.

Counted from section 1's runs: ours = one FlushTrigger execution, then one PollOrchestrator
execution per status read (each schedules the next, the last publishes the event); the SDK
way = one function execution that holds `begin_flush_cache(...).result()` open for the whole
flush. Service Bus operations are counted one per message sent, received and completed (the
meter counts API calls; a batched receive costs fewer, so this is the upper end).
"""
from __future__ import annotations

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


def _ours(v: dict[str, Any]) -> dict[str, float]:
    execs = v["executions"] or (1 + v["reads"])
    ops = 1 + 2 * execs + (execs - 1) + 1          # send request; receive+complete each;
    gb_s = v["exec_ms"] / 1000 * FLEX_MEMORY_GB      # schedule each next poll; publish event
    return {"execs": execs, "ops": ops, "gb_s": gb_s,
            "azure_gb_s": gb_s + execs * AZURE_WAIT_S * FLEX_MEMORY_GB,
            "worst_gb_s": execs * FLEX_MEMORY_GB}


def _sdk(v: dict[str, Any], d: float) -> dict[str, float]:
    held = d + v["median"]                           # the execution waits for .result()
    return {"execs": 1, "ops": 4, "gb_s": held * FLEX_MEMORY_GB,
            "worst_gb_s": held * FLEX_MEMORY_GB}


def _money(c: dict[str, float], billing: str = "gb_s") -> float:
    gb_s = c[billing]
    return (c["execs"] * FLEX_PER_MILLION / 1e6 + gb_s * FLEX_GB_S
            + c["ops"] * SB_PER_MILLION / 1e6)


def run(lag: Section) -> Section:
    rows = lag.data["rows"]
    s = Section("5. Service Bus operations, function executions and cost per flush")
    s.table = [["flush takes", "ours: executions / SB operations / ARM requests",
                "ours: $ per 1,000 flushes, loopback-measured execution time / with "
                f"{AZURE_WAIT_S * 1000:.0f} ms of Azure waits per execution (assumed) / "
                "each execution billed 1 s alone",
                "SDK default in a function: execution held / $ per 1,000",
                "SDK interval=2: held / $ per 1,000 (ARM requests)",
                "SDK interval=1: held / $ per 1,000 (ARM requests)"]]

    def sdk_cell(v: dict[str, Any] | None, d: float, requests: bool = True) -> str:
        if not v:
            return "-"
        c = _sdk(v, d)
        return (f"{c['gb_s'] / FLEX_MEMORY_GB:.0f} s / ${_money(c) * 1000:.3f}"
                + (f" ({v['requests']:g})" if requests else ""))

    for d in lag.data["durations"]:
        o = rows.get(f"ours|{d:g}")
        if not o:
            continue
        c = _ours(o)
        s.table.append([
            f"{d:g} s", f"{c['execs']:g} / {c['ops']:g} / {o['requests']:g}",
            f"${_money(c) * 1000:.4f} / ${_money(c, 'azure_gb_s') * 1000:.3f} / "
            f"${_money(c, 'worst_gb_s') * 1000:.3f}",
            sdk_cell(rows.get(f"sdk|{d:g}"), d, requests=False),
            sdk_cell(rows.get(f"sdk2|{d:g}"), d), sdk_cell(rows.get(f"sdk1|{d:g}"), d)])
    s.notes = [
        "Ours per flush: executions = FlushTrigger + one PollOrchestrator per status read "
        "(counted per request in the serve log); Service Bus operations = the request's send, "
        "a receive and a complete per execution, the scheduled next poll of every execution "
        "but the last, and the event's publish (3 x executions + 1; a subscriber's receive "
        "and complete of the event add 2 on either side). Each poll of ours therefore costs "
        "1 execution and 3 Service Bus operations.",
        "Money: executions x $0.40/M + GB-s x $0.000026 + Service Bus operations x $0.80/M "
        "(marginal, past the 13M operations a month the base charge includes). Ours' GB-s = "
        "the executions' measured wall time (serve log) x 2,048 MB, measured on loopback: "
        "the emulator answers in ~1 ms and the bus and ledger are local SQLite files, where "
        "in Azure each execution waits tens of ms for ARM and for Service Bus (and writes the "
        "ledger to Table storage), so the middle figure adds an assumed "
        f"{AZURE_WAIT_S * 1000:.0f} ms per execution; the last bills every execution on its "
        "own for Flex's 1 s minimum (an instance busy with other executions shares that "
        "second, so the truth lies between). Which way is cheaper depends on that billing: "
        "with a minimum per execution, one SDK call held a few seconds past the end "
        "(polling_interval=2) can cost less than ours' one execution per status read, so "
        "compare the columns, not one figure. The SDK way holds "
        "one execution for the whole flush plus its lag (2,048 MB x that time): several "
        "such executions on one instance share its memory, so a busy instance pays less per "
        "flush than shown.",
        PRICES_NOTE,
    ]
    d10 = next((d for d in lag.data["durations"] if d == 10), lag.data["durations"][-1])
    o, a, b = rows.get(f"ours|{d10:g}"), rows.get(f"sdk|{d10:g}"), rows.get(f"sdk2|{d10:g}")
    if o and a and b:
        c, sa, sb = _ours(o), _sdk(a, d10), _sdk(b, d10)
        s.headline = [f"Cost of a {d10:g} s flush: ours {c['execs']:g} executions and "
                      f"{c['ops']:g} Service Bus operations = ${_money(c) * 1000:.4f} per "
                      f"1,000 flushes with the execution time measured on loopback, "
                      f"${_money(c, 'azure_gb_s') * 1000:.3f} with an assumed "
                      f"{AZURE_WAIT_S * 1000:.0f} ms of Azure waits per execution, "
                      f"${_money(c, 'worst_gb_s') * 1000:.3f} if every execution paid "
                      f"Flex's 1 s minimum alone; an SDK call held in a function: "
                      f"${_money(sb) * 1000:.3f} at polling_interval=2 "
                      f"({sb['gb_s'] / FLEX_MEMORY_GB:.0f} s held), "
                      f"${_money(sa) * 1000:.3f} at its default "
                      f"({sa['gb_s'] / FLEX_MEMORY_GB:.0f} s held)."]
    s.data = {"prices": {"flex_gb_s": FLEX_GB_S, "flex_per_million": FLEX_PER_MILLION,
                         "sb_per_million": SB_PER_MILLION}}
    return s
