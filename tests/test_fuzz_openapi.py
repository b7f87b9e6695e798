"""The API fuzzed from its own /openapi.json (schemathesis) against PostgreSQL and Redis: no
answer is a 5xx, and every answer holds to the schema the document publishes for it."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from gateway.openapi import document
from tests.conftest import build_app, make_config

ISSUER = "http://gateway.test"


@schemathesis.serializer("application/jose")
def _compact_jose(ctx, value) -> bytes:
    """Whatever the fuzzer makes of a compact JWS body (a string), as bytes."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else \
        repr(value).encode()


schema = schemathesis.openapi.from_dict(document(ISSUER))


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory, request):
    """One gateway on PostgreSQL + Redis for the whole fuzz run (module scope: hypothesis
    runs many examples per test)."""
    from tests.conftest import REDIS_URL
    import uuid
    tmp = tmp_path_factory.mktemp("fuzz")
    from sqlalchemy import create_engine, text
    from tests.conftest import schema_url
    name = f"fuzz_{uuid.uuid4().hex[:10]}"
    admin = create_engine(schema_url("public"))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    config = make_config(tmp, "embedded", request, database_url=schema_url(name),
                         redis_url=REDIS_URL, redis_prefix=f"cdeg-fuzz-{name}:")
    app = build_app(config)
    yield app
    app.extensions["cdeg"].close()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_5xx_and_answers_hold_to_the_document(case, fuzzed_app):
    response = case.call(app=fuzzed_app)
    assert response.status_code < 500, (case.method, case.path, response.status_code,
                                        response.text[:300])
    case.validate_response(response, checks=(response_schema_conformance,
                                               content_type_conformance,
                                               status_code_conformance))
