"""The app wired for the embedded default: the local bus and the SQLite ledger in the local
dir, the ARM emulator's fixed token (docs/design.md, "Request ledger": the same port)."""
from __future__ import annotations

from ..app import FlushApp
from ..arm import ArmClient, IdentityToken, StaticToken, TokenSource
from ..settings import Settings
from .ledger import SqliteLedger

EMULATOR_TOKEN = "local-emulator-token"
LEDGER_FILE = "ledger.sqlite"


def local_app(settings: Settings) -> FlushApp:
    from .runtime import open_bus

    tokens: TokenSource = StaticToken(EMULATOR_TOKEN) if settings.is_local_endpoint \
        else IdentityToken(settings.client_id)
    return FlushApp(settings, ArmClient(settings.arm_endpoint, settings.api_version, tokens),
                    open_bus(settings), SqliteLedger(settings.local_dir / LEDGER_FILE))
