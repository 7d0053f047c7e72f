"""The `messenger` command: one entry point, a sub-command group per concern."""

from __future__ import annotations

import typer

from messenger.cli import bench, chaos, check, cluster, demo, migrate, relay, seed, serve, shards

app = typer.Typer(
    name="messenger",
    help="A messenger backend sharded over PostgreSQL: cluster, migrations, API, tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cluster.register(app)
migrate.register(app)
seed.register(app)
serve.register(app)
relay.register(app)
bench.register(app)
chaos.register(app)
demo.register(app)
check.register(app)
shards.register(app)


if __name__ == "__main__":
    app()
