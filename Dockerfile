FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY connectors ./connectors
COPY policies ./policies
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV CDEG_INSTANCE_DIR=/var/lib/cdeg
EXPOSE 8000
CMD ["gunicorn", "-w", "2", "-b", "0.0.0.0:8000", "gateway.wsgi:app"]
