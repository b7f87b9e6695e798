"""``gunicorn gateway.wsgi:app`` — the gateway configured from CDEG_* variables.

What the app built to serve (modules, compiled statements, the catalogue, policies, keys) lives
as long as the process: it is moved out of the cyclic garbage collector's reach
(``gc.freeze``), so the collections that requests trigger scan only what requests made.
"""
import gc

from gateway import create_app

app = create_app()
gc.collect()
gc.freeze()
