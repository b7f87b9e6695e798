FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY connectors ./connectors
COPY policies ./policies
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV CDEG_INSTANCE_DIR=/var/lib/cdeg
# /metrics summed across the gunicorn workers (prometheus-client's multiprocess mode)
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/cdeg-metrics
EXPOSE 8000
CMD ["sh", "-c", "rm -rf $PROMETHEUS_MULTIPROC_DIR && mkdir -p $PROMETHEUS_MULTIPROC_DIR && exec gunicorn -w 2 -b 0.0.0.0:8000 -c python:gateway.gunicorn_conf gateway.wsgi:app"]
