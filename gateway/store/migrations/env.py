"""Alembic's environment for the gateway's schema; there is no alembic.ini.

``gateway.store.db.upgrade(engine)`` configures Alembic in code (``db.alembic_config()``) and
hands over its own connection, already inside the transaction that holds the migration lock,
in ``config.attributes["connection"]``. Developer commands (``python -m
gateway.store.migrations ...``) come without one and connect to ``sqlalchemy.url``.
"""
from __future__ import annotations

from alembic import context

from gateway.store.db import make_engine, metadata

config = context.config


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=True,
        render_as_batch=True,       # SQLite alters a table by copying it; PostgreSQL ALTERs
        **kwargs,
    )


def run_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
