"""gunicorn settings for the gateway with several workers and ``/metrics``:
``gunicorn -c python:gateway.gunicorn_conf gateway.wsgi:app`` with ``PROMETHEUS_MULTIPROC_DIR``
set to an empty folder all workers share (prometheus-client's multiprocess mode)."""
from __future__ import annotations

import os


def child_exit(server, worker):   # noqa: ARG001 - gunicorn's hook signature
    """A worker that exits leaves its live gauges behind unless marked dead."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)
