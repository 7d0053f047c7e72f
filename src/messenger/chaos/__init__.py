"""The fault suite (`messenger chaos`): faults injected into a real local cluster under load.

Each module has one job: `ledger` (every acknowledged write and every request's outcome),
`window` (the error window of a fault, and which shards saw errors), `processes` (finding,
killing, pausing a server's processes), `faults` (what each fault does and how it recovers),
`load` (the mixed HTTP load), `sockets` (WebSocket sessions that reconnect and resume),
`verify` (re-reading the ledger, the relay's backlog, the reference audit), `report` (the
table, report.md, report.json) and `runner` (the whole run).
"""
