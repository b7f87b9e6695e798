"""Alembic's own command line on the gateway's migrations, for developers:

    python -m gateway.store.migrations revision -m "add the outbox"
    python -m gateway.store.migrations revision --autogenerate -m "add the outbox"
    python -m gateway.store.migrations history

It works on ``CDEG_DATABASE_URL`` or the embedded SQLite of ``CDEG_INSTANCE_DIR`` (autogenerate
compares the models with that database, so bring it to head first: ``cdeg db upgrade``).
Operators run ``cdeg db upgrade``, which takes the migration lock; this does not.
"""
from __future__ import annotations

import sys

from alembic.config import CommandLine

from gateway.config import Config
from gateway.store.db import alembic_config


def main(argv=None) -> None:
    cli = CommandLine(prog="python -m gateway.store.migrations")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cli.run_cmd(alembic_config(Config.from_env().sqlalchemy_url), options)


if __name__ == "__main__":
    main(sys.argv[1:])
