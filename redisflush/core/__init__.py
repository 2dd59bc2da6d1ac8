"""The pure core: request and target rules, ARM's long-running-operation rules, the step
function (state + answers + now -> commands) and the events it decides to send.

Nothing under this package does IO or imports an IO library (requests, azure-*, sqlite3,
socket): the clock, ids and every answer from ARM or the ledger come in as arguments, so
each policy is a table or replay test (docs/design.md, "Layout").
"""
