"""The sender: what a pipeline runs to drop a flush request and follow it (docs/design.md,
"Layout" and "CLI").

It needs only azure-servicebus and azure-identity: nothing here imports azure-functions,
the app's ARM client or the local host, so `pip install redisflush` (no extras) is enough
for `redisflush send ... --wait` and `redisflush watch`. The local bus is reached only
through `sender.local`, which `--local` loads on demand.

Modules: `targets` (CLI flags -> request body), `prepare` (validate with the app's own
parser, build the message), `settings` (environment, plus local.settings.json in an app
root), `follow` (the reply session -> the final event), `report` (lines for people),
`channel` (the bus seen by the sender), `azure`/`azure_sdk`/`azure_errors`/`namespace`
(Service Bus), `local` (the local bus of `serve --local`), `argtypes` (flag value ranges),
`errors`, `commands` (`send` and `watch`).
"""
