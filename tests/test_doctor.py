"""``cdeg doctor``: one line per check of a deployment, exit 1 when any fails."""
from __future__ import annotations

import os

from click.testing import CliRunner

from gateway.cli import main

from .conftest import REDIS_URL


def doctor(env: dict):
    return CliRunner().invoke(main, ["doctor"], env=env)


def test_a_fresh_embedded_gateway_is_healthy_line_by_line(tmp_path):
    result = doctor({"CDEG_INSTANCE_DIR": str(tmp_path / "instance")})
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok   schema", "ok   redis", "ok   keys", "ok   policies and forms", "ok   departments"]


def test_loose_key_files_fail_the_keys_check(tmp_path):
    env = {"CDEG_INSTANCE_DIR": str(tmp_path / "instance")}
    assert doctor(env).exit_code == 0
    for pem in (tmp_path / "instance" / "keys").glob("*.pem"):
        os.chmod(pem, 0o644)
    result = doctor(env)
    assert result.exit_code == 1
    assert "FAIL keys: readable by others" in result.output


def test_a_redis_that_keeps_nothing_and_a_schema_behind_fail_their_checks(tmp_path, pg_schema,
                                                                          redis_prefix):
    """This machine's Redis runs with appendonly off and no snapshots (CI's too)."""
    env = {"CDEG_INSTANCE_DIR": str(tmp_path / "instance"), "CDEG_DATABASE_URL": pg_schema,
           "CDEG_REDIS_URL": REDIS_URL, "CDEG_REDIS_PREFIX": redis_prefix}
    result = doctor(env)                 # nothing migrated in this schema yet
    assert result.exit_code == 1
    assert "FAIL schema: at nothing" in result.output and "cdeg db upgrade" in result.output
    assert "FAIL redis: answers, but keeps nothing across a restart" in result.output
    assert "Traceback" not in result.output


def test_departments_over_http_are_checked_by_their_health_not_a_citizens_identifier(
        tmp_path, departments_server):
    result = doctor({"CDEG_INSTANCE_DIR": str(tmp_path / "instance"),
                     "CDEG_DEPARTMENTS_URL": departments_server})
    assert f"ok   departments: {departments_server}/healthz answered 200" in result.output
