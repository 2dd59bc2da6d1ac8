"""The app wired for the embedded default: the local bus and the SQLite ledger in the local
dir, the ARM emulator's fixed token (docs/design.md, "Request ledger": the same port)."""
from __future__ import annotations

from ..app import FlushApp
from ..arm import TOTAL_TIMEOUT, ArmClient
from ..arm_tokens import IdentityToken, StaticToken, TokenSource
from ..settings import Settings
from .bus import LocalBus
from .ledger import SqliteLedger

EMULATOR_TOKEN = "local-emulator-token"
LEDGER_FILE = "ledger.sqlite"


def local_app(settings: Settings, bus: LocalBus | None = None, *,
              arm_total_timeout: float = TOTAL_TIMEOUT) -> FlushApp:
    """The local ledger whatever AzureWebJobsStorage says (the sample points it at Azurite for
    `func start`): the embedded default keeps all its state in the local dir."""
    from .runtime import open_bus

    tokens: TokenSource = StaticToken(EMULATOR_TOKEN) if settings.is_local_endpoint \
        else IdentityToken(settings.client_id)
    arm = ArmClient(settings.arm_endpoint, settings.api_version, tokens,
                    total_timeout=arm_total_timeout)
    return FlushApp(settings, arm, bus if bus is not None else open_bus(settings),
                    SqliteLedger(settings.local_dir / LEDGER_FILE))
