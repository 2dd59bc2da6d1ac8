"""The embedded default put together: local bus + ARM emulator + local host, on one machine.

`serve --local`, `demo` and the end-to-end tests all start it the same way, so what the
tests exercise is what a user runs.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import functions
from ..app import FlushApp
from ..arm import ArmClient, IdentityToken, StaticToken
from ..errors import ConfigurationError
from ..settings import Settings
from .bus import LocalBus
from .host import LocalHost, load_functions, read_values

log = logging.getLogger("redisflush.local")
EVENTS_SUBSCRIPTION = "all"
BUS_FILE, EMULATOR_FILE, PORT_FILE = "bus.sqlite", "emulator.sqlite", "emulator.port"


def find_app_root(start: Path | None = None) -> Path:
    """The folder holding host.json: the given one, the current one, or this checkout's."""
    for candidate in ([start] if start else []) + [Path.cwd(), Path(__file__).parents[2]]:
        if (candidate / "host.json").is_file():
            return candidate.resolve()
    if start:
        raise ConfigurationError(f"--app-root: {start} has no host.json")
    raise ConfigurationError("no host.json here: run from the app root or pass --app-root")


def local_settings(app_root: Path, env: Mapping[str, str] | None = None,
                   overrides: Mapping[str, str] | None = None) -> tuple[Settings, dict[str, str]]:
    values = read_values(app_root, env)
    values.update(overrides or {})
    settings = Settings.from_env(values, app_root)
    if not settings.local_dir.is_absolute():
        settings = Settings.from_env({**values, "REDISFLUSH_LOCAL_DIR":
                                      str(app_root / settings.local_dir)}, app_root)
    return settings, values


def open_bus(settings: Settings) -> LocalBus:
    """The local bus file with this app's entities, set up as the README asks of Azure."""
    bus = LocalBus(settings.local_dir / BUS_FILE)
    bus.ensure_queue(settings.request_queue, max_delivery_count=10)
    bus.ensure_queue(settings.poll_queue, max_delivery_count=10)
    bus.ensure_topic(settings.events_topic)
    bus.ensure_subscription(settings.events_topic, EVENTS_SUBSCRIPTION)
    bus.ensure_queue(settings.reply_queue, requires_session=True)
    return bus


@dataclass
class LocalRuntime:
    """A running local stack; `stop()` drains in-flight invocations."""

    settings: Settings
    bus: LocalBus
    host: LocalHost
    emulator: Any = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> "LocalRuntime":
        self._thread = threading.Thread(target=self.host.run, name="local-host", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.host.stop()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.emulator is not None:
            self.emulator.close()
        functions.install(None)

    def __enter__(self) -> "LocalRuntime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_emulator(settings: Settings, *, port: int = 0, config_path: str | None = None,
                   config: Any = None, redis_url: str | None = None) -> Any:
    """The ARM emulator, on the port it used last time for this local dir (so poll URLs in
    messages stay valid across a restart) and with its operations kept in the local dir."""
    from .emulator import ArmEmulator, load_config
    from .keystore import make_keystore

    port_file = settings.local_dir / PORT_FILE
    if not port and port_file.is_file():
        try:
            port = int(port_file.read_text().strip())
        except ValueError:
            port = 0
    cfg = config if config is not None else (load_config(config_path) if config_path else None)
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    try:
        emulator = ArmEmulator(cfg, port=port, keystore=make_keystore(redis_url),
                               state_path=str(settings.local_dir / EMULATOR_FILE)).start()
    except OSError:
        if not port:
            raise
        emulator = ArmEmulator(cfg, port=0, keystore=make_keystore(redis_url),
                               state_path=str(settings.local_dir / EMULATOR_FILE)).start()
    port_file.write_text(emulator.url.rsplit(":", 1)[1])
    return emulator


def build_runtime(app_root: Path, *, arm_endpoint: str | None = None, concurrency: int = 8,
                  emulator_port: int = 0, emulator_config: str | None = None,
                  emulator_config_obj: Any = None, redis_url: str | None = None,
                  env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, str] | None = None) -> LocalRuntime:
    """Everything `serve --local` runs, not yet started."""
    settings, values = local_settings(app_root, env, overrides)
    emulator = None
    if arm_endpoint is None:
        emulator = start_emulator(settings, port=emulator_port, config_path=emulator_config,
                                  config=emulator_config_obj, redis_url=redis_url)
        arm_endpoint = emulator.url
    values["REDISFLUSH_ARM_ENDPOINT"] = arm_endpoint
    try:
        settings = Settings.from_env({**values, "REDISFLUSH_LOCAL_DIR":
                                      str(settings.local_dir)}, app_root)
        tokens = StaticToken(functions.EMULATOR_TOKEN) if settings.is_local_endpoint \
            else IdentityToken(settings.client_id)
        bus = open_bus(settings)
        app = FlushApp(settings, ArmClient(settings.arm_endpoint, settings.api_version, tokens),
                       bus)
        functions.install(app)
        host = LocalHost(bus, load_functions(app_root, values), concurrency=concurrency)
    except Exception:
        if emulator is not None:
            emulator.close()
        raise
    return LocalRuntime(settings, bus, host, emulator)
