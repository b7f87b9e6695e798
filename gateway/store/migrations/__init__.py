"""The schema's history as Alembic revisions (``versions/``), run by ``gateway.store.db.upgrade``.

Every schema change is a new revision here; ``tests/test_migrations.py`` checks that the models in
``gateway/store/db.py`` and the revisions agree on SQLite and PostgreSQL.
"""
