"""The sender's two ways to fail without a traceback: the call itself was wrong
(`UsageError`) or the bus failed on the way (`ChannelError`); both are one line, exit 2."""
from __future__ import annotations


class UsageError(Exception):
    """A problem with how the command was called: one line, exit 2."""


class ChannelError(Exception):
    """The bus failed (no connection, busy, a lock lost): nothing can be said of the request."""
