# Countersign server image: docker build -t countersign . && docker run -p 8080:8080 countersign
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY countersign ./countersign
COPY storage ./storage
COPY bot ./bot
COPY cards ./cards
RUN pip install . && useradd --create-home --uid 10001 countersign \
    && mkdir /data && chown countersign /data

USER countersign
WORKDIR /data
EXPOSE 8080
# SQLite in /data by default (mount a volume); set COUNTERSIGN_DATABASE_URL for PostgreSQL.
CMD ["sh", "-c", "exec countersign serve --host 0.0.0.0 --port ${PORT:-8080}"]
