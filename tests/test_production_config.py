"""CDEG_ENV=production refuses to start on anything meant for the demo, naming the setting."""
from __future__ import annotations

import pytest

from gateway import create_app
from gateway.config import Config, ConfigError

PRODUCTION = {"CDEG_ENV": "production", "CDEG_SECRET_KEY": "s" * 40,
              "CDEG_ISSUER": "https://cdeg.example",
              "CDEG_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
              "CDEG_REDIS_URL": "redis://127.0.0.1:6379/0",
              "CDEG_DEPARTMENTS_URL": "https://departments.example",
              "CDEG_DATA_KEY": "cHJvZHVjdGlvbi1kYXRhLWtleS1vZi0zMi1ieXRlcyE"}


def test_a_complete_production_configuration_is_accepted():
    assert Config.from_env(dict(PRODUCTION)).production


@pytest.mark.parametrize("name", ["CDEG_DEPARTMENTS_URL", "CDEG_DATABASE_URL", "CDEG_REDIS_URL",
                                  "CDEG_SECRET_KEY", "CDEG_DATA_KEY"])
def test_production_without_a_setting_refuses_to_start_and_names_it(name):
    environ = {k: v for k, v in PRODUCTION.items() if k != name}
    with pytest.raises(ConfigError, match=name):
        Config.from_env(environ)


def test_production_on_sqlite_refuses_to_start():
    with pytest.raises(ConfigError, match="CDEG_DATABASE_URL.*SQLite"):
        Config.from_env({**PRODUCTION, "CDEG_DATABASE_URL": "sqlite:////tmp/cdeg.db"})


def test_production_gateway_built_without_from_env_still_refuses_the_mock_departments(tmp_path):
    config = Config(env="production", instance_dir=tmp_path, secret_key="s" * 40,
                    issuer="https://cdeg.example", database_url=PRODUCTION["CDEG_DATABASE_URL"],
                    redis_url=PRODUCTION["CDEG_REDIS_URL"])
    with pytest.raises(ConfigError, match="CDEG_DEPARTMENTS_URL"):
        create_app(config)


@pytest.mark.parametrize("name, value", [("CDEG_DATABASE_URL", "foo://x"),
                                         ("CDEG_DATABASE_URL", "not a url"),
                                         ("CDEG_REDIS_URL", "notaurl")])
def test_a_malformed_service_url_is_refused_naming_the_setting(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})
