"""``gunicorn gateway.wsgi:app`` — the gateway configured from CDEG_* variables."""
from gateway import create_app

app = create_app()
