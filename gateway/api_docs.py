"""``/docs``: the API's documentation for departments and banks — Swagger UI (5.x, which reads
OpenAPI 3.1) rendering ``/openapi.json``. Its assets come from an installed package
(flask-swagger-ui's copy of the Swagger UI distribution), served by the gateway itself: no CDN,
no inline script (the page's start-up is ``static/docs-init.js``)."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, send_from_directory, url_for

from gateway import http_errors

bp = Blueprint("docs", __name__)
http_errors.use(bp, http_errors.as_problem)

ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js")
# Swagger UI sets style attributes as it renders: the one relaxation, on this page alone
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; object-src 'none'; "
       "base-uri 'none'; form-action 'none'")


def _dist() -> Path:
    import flask_swagger_ui
    return Path(flask_swagger_ui.__file__).parent / "dist"


@bp.get("/docs")
def docs():
    page = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>CDEG API — OAuth, data API, CDI bridge</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{url_for('docs.asset', name='swagger-ui.css')}">
</head>
<body>
  <div id="swagger-ui"></div>
  <noscript><p>The API is described in <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p></noscript>
  <script src="{url_for('docs.asset', name='swagger-ui-bundle.js')}"></script>
  <script src="{url_for('static', filename='docs-init.js')}"></script>
</body>
</html>"""
    return page, 200, {"Content-Type": "text/html; charset=utf-8",
                       "Content-Security-Policy": CSP, "Cache-Control": "no-cache"}


@bp.get("/docs/assets/<name>")
def asset(name: str):
    if name not in ASSETS:
        abort(404)
    return send_from_directory(_dist(), name, max_age=86400)
