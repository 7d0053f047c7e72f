"""The benchmark harness: load generator, scenarios, database and server ceilings, report.

Each module has one job: `loadgen` (HTTP client, recording, CPU meter), `scenarios` (what a
virtual user does), `phase` (one scenario at one concurrency level), `ceilings` (pgbench and
the empty-handler server), `server` (start and stop a granian server), `report` and `charts`
(files under var/bench/<timestamp>/), `runner` (the whole run).
"""
