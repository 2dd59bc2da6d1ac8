"""A pipeline installs the sender alone (docs/design.md, "Layout"): `send` and `watch` against
Azure load nothing of the app (azure-functions, the ARM client, the ledger, the local host or
its SQLite bus) and need no host.json; the wheel depends on azure-servicebus and
azure-identity only, and runs with nothing else installed."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
RID = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-app/providers/"
       "Microsoft.Cache/redis/cache-one")
APP_MODULES = ("azure.functions", "redisflush.local", "redisflush.app",
               "redisflush.app_invocation", "redisflush.app_ledger", "redisflush.arm",
               "redisflush.arm_deadline", "redisflush.arm_tokens", "redisflush.functions",
               "redisflush.ledger", "redisflush.orchestrator", "sqlite3")
BASE_DEPENDENCIES = {"azure-identity", "azure-servicebus"}


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter, in a folder with no host.json and no app setting."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDISFLUSH_", "ServiceBusConnection", "AZURE_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)


LOADED = """
import json, sys
print(json.dumps(sorted(sys.modules)))
"""


def loaded(result: subprocess.CompletedProcess[str]) -> set[str]:
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def offending(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_dry_runs_load_no_sdk_and_nothing_of_the_app(tmp_path: Path) -> None:
    code = f"""
from redisflush.cli import main
rid = {RID!r}
sub = rid.split("/")[2]
for argv in (["send", "--namespace", "x", "--dry-run", "--resource-id", rid],
             ["send", "--namespace", "x", "--dry-run", "--resource-id", rid,
              "--resource-id", rid.replace("cache-one", "cache-two"), "--wait", "--json"],
             ["send", "--dry-run", "--subscription", sub, "--tag", "app=shop"],
             ["send", "--dry-run", "--subscription", sub, "--resource-group", "rg-app",
              "--cluster", "amr-1", "--no-linked"],
             ["send", "--namespace", "x", "--dry-run", "--cache", "nope"],
             ["watch", "--subscription-name", "all/$deadletterqueue"]):
    assert main(argv) in (0, 2), argv
""" + LOADED
    modules = loaded(run_python(code, tmp_path))
    assert offending(modules, (*APP_MODULES, "azure", "requests")) == []


FAKE_SDK = """
import sys
import azure.servicebus as sb
EVENT = b'{"type":"RedisFlush.FlushCompleted","id":"r-1:completed","subject":"cache-one",'\
        b'"data":{"requestId":"r-1","status":"Succeeded"}}'

class Msg:
    body = EVENT

class Receiver:
    def __init__(self, *a, **k): self.left = [Msg()]
    def __enter__(self): return self
    def receive_messages(self, max_message_count=1, max_wait_time=None):
        out, self.left = self.left[:1], self.left[1:]
        return out
    def complete_message(self, m): pass
    def close(self): pass

class Sender:
    def send_messages(self, m, timeout=None): pass
    def close(self): pass

sb.ServiceBusClient.get_queue_sender = lambda self, *a, **k: Sender()
sb.ServiceBusClient.get_queue_receiver = lambda self, *a, **k: Receiver()
sb.ServiceBusClient.get_subscription_receiver = lambda self, *a, **k: Receiver()

class Token:
    token, expires_on = "t", 2 ** 40

class Credential:
    def __init__(self, **kwargs): pass
    def get_token(self, *scopes, **kwargs): return Token()
    def close(self): pass

import azure.identity
azure.identity.DefaultAzureCredential = Credential
"""


def test_send_and_watch_over_azure_load_nothing_of_the_app(tmp_path: Path) -> None:
    conn = "Endpoint=sb://ns-test.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=dmFsdWU="
    code = FAKE_SDK + f"""
from redisflush.cli import main
assert main(["send", "--connection-string", {conn!r}, "--resource-id", {RID!r}, "--wait",
             "--json", "--request-id", "r-1"]) == 0
assert main(["send", "--namespace", "ns-test", "--resource-id", {RID!r}]) == 0
assert main(["watch", "--namespace", "ns-test", "--count", "1"]) == 0
assert main(["watch", "--connection-string", {conn!r}, "--timeout", "0"]) == 0
""" + LOADED
    result = run_python(code, tmp_path)
    modules = loaded(result)
    # requests comes with azure-core (azure-servicebus's own dependency), never through us.
    assert offending(modules, APP_MODULES) == []
    assert '"status":"Succeeded"' in result.stdout


# -- the wheel ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps .` of a copy of the project files (the checkout stays clean)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (src / name).write_bytes((REPO / name).read_bytes())
    for path in (REPO / "redisflush").rglob("*.py"):
        target = src / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    out = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w",
                    str(out)], check=True, capture_output=True, text=True, timeout=300)
    (built,) = out.glob("redisflush-*.whl")
    return built


def test_wheel_metadata_names_the_sender_dependencies_and_the_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    requires = [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    base = {canonicalize_name(r.name) for r in requires if r.marker is None}
    assert base == BASE_DEPENDENCIES
    app = {r.name for r in requires if r.marker and r.marker.evaluate({"extra": "app"})}
    assert {"azure-functions", "requests", "azure-data-tables"} <= app
    assert re.search(r"^redisflush = redisflush\.cli:main$", entry_points, re.M)
    assert {n.split("/")[0] for n in names} == {"redisflush", info}
    assert "redisflush/sender/commands.py" in names


def _closure(roots: set[str]) -> dict[str, object]:
    """The installed distributions `roots` need (markers evaluated, no extras)."""
    found: dict[str, object] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new venv holding the wheel (--no-deps) and, through a .pth, only the base
    dependencies' own closure from this environment: nothing of the app's extras."""
    base = tmp_path_factory.mktemp("fresh")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    staged = base / "deps"
    staged.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for dist in _closure(BASE_DEPENDENCIES).values():
        for file in dist.files or []:  # type: ignore[attr-defined]
            top = file.parts[0]
            if top != ".." and not (staged / top).exists() and (site / top).exists():
                (staged / top).symlink_to(site / top)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    Path(purelib, "base_dependencies.pth").write_text(str(staged) + "\n")
    yield venv


def in_fresh(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")
           and not k.startswith(("REDISFLUSH_", "ServiceBusConnection", "AZURE_"))}
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_wheel_alone_sends_and_says_what_the_local_commands_need(
        fresh: Path, tmp_path: Path) -> None:
    bin_ = fresh / "bin"
    where = in_fresh(fresh, str(bin_ / "python"), "-c", "import redisflush; "
                     "print(redisflush.__file__)", cwd=tmp_path)
    assert str(fresh) in where.stdout, where
    assert in_fresh(fresh, str(bin_ / "python"), "-c", "import azure.functions",
                    cwd=tmp_path).returncode != 0
    version = in_fresh(fresh, str(bin_ / "redisflush"), "--version", cwd=tmp_path)
    assert version.stdout.startswith("redisflush "), version
    dry = in_fresh(fresh, str(bin_ / "python"), "-m", "redisflush", "send", "--dry-run",
                   "--resource-id", RID, cwd=tmp_path)
    assert dry.returncode == 0, dry
    printed = json.loads(dry.stdout)
    assert printed == {"resourceId": RID, "requestId": printed["requestId"]}, dry
    with socket.socket() as sock:                 # the real AMQP client, to a closed port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = (f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=dmFsdWU=;"
            "UseDevelopmentEmulator=true")
    sent = in_fresh(fresh, str(bin_ / "redisflush"), "send", "--connection-string", conn,
                    "--resource-id", RID, cwd=tmp_path)
    assert sent.returncode == 2 and "no connection to namespace 127.0.0.1" in sent.stderr
    assert len(sent.stderr.splitlines()) == 1, sent.stderr
    demo = in_fresh(fresh, str(bin_ / "redisflush"), "demo", cwd=tmp_path)
    assert demo.returncode == 2, demo
    assert demo.stderr.count("\n") == 1 and "pip install 'redisflush[local]'" in demo.stderr
