"""`python bench/serve_variant.py serve --local ...`: serve from another source tree.

REDISFLUSH_BENCH_TREE=DIR runs `python -m redisflush` from DIR (e.g. an earlier commit
exported with `git archive COMMIT | tar -x -C DIR`): that tree's redisflush package and its
function folders (DIR is made the current folder, so it is the app root), so bench/cpu.py
can measure an earlier version on the same workload in the same run. Without the variable
this is plain `python -m redisflush` from this checkout.

REDISFLUSH_BENCH_IMPORTS=mod,mod imports those modules before serving: `serve --local` loads
none of the Azure adapters' SDKs (azure.servicebus, azure.data.tables, azure.identity), which
the app holds in Azure, so the fleet whose RSS section 6 reports imports them first
(bench/fleet.py AZURE_ADAPTERS) and its figure does not leave them out.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    tree = os.environ.get("REDISFLUSH_BENCH_TREE")
    source = Path(tree).resolve() if tree else ROOT
    sys.path[:] = [str(source)] + [p for p in sys.path if Path(p or ".").resolve() not in (
        ROOT, ROOT / "bench")]
    if tree:
        os.chdir(source)  # the app root: host.json and the function folders of that tree
    for module in filter(None, os.environ.get("REDISFLUSH_BENCH_IMPORTS", "").split(",")):
        importlib.import_module(module.strip())
    from redisflush.cli import main as cli_main
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
