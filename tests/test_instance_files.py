"""The instance folder holds the SQLite ledger (with HKIDs), the signing keys and the instance
secret: the folder and everything in it are private to the gateway's user."""
from __future__ import annotations

import os
import stat

from gateway import create_app
from gateway.config import Config
from gateway.demo.seed import seed


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _start(folder):
    app = create_app(Config(instance_dir=folder, issuer="http://gateway.test", env="test"))
    seed(app.extensions["cdeg"])  # writes: the -wal and -shm files exist now
    return app


def test_the_ledger_and_its_wal_files_are_readable_by_the_gateway_user_only(tmp_path):
    folder = tmp_path / "instance"
    old = os.umask(0o022)  # the usual umask would make new files 0644
    try:
        app = _start(folder)
    finally:
        os.umask(old)
    ledger = folder / "cdeg.sqlite3"
    files = [ledger, folder / "cdeg.sqlite3-wal", folder / "cdeg.sqlite3-shm",
             folder / "secret.key"]
    try:
        assert _mode(folder) == 0o700
        for path in files:
            assert path.exists(), path
            assert _mode(path) == 0o600, (path.name, oct(_mode(path)))
    finally:
        app.extensions["cdeg"].close()


def test_an_instance_made_world_readable_earlier_is_tightened_at_start(tmp_path):
    folder = tmp_path / "instance"
    _start(folder).extensions["cdeg"].close()
    os.chmod(folder, 0o755)
    for path in folder.glob("cdeg.sqlite3*"):
        os.chmod(path, 0o644)
    app = _start(folder)
    try:
        assert _mode(folder) == 0o700
        for path in folder.glob("cdeg.sqlite3*"):
            assert _mode(path) == 0o600, path.name
    finally:
        app.extensions["cdeg"].close()
