# Carillon image: the API, the Celery workers and beat all run from it (see docker-compose.yml).
# Only the runtime is installed: no compiler, no test or lint tools.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CARILLON_HOME=/var/lib/carillon \
    CARILLON_API_HOST=0.0.0.0 \
    CARILLON_API_PORT=8080

# An unprivileged account; CARILLON_HOME (beat's schedule file) is the only place it writes.
RUN groupadd --system --gid 10001 carillon \
    && useradd --system --uid 10001 --gid carillon --no-create-home \
       --home-dir /var/lib/carillon --shell /usr/sbin/nologin carillon \
    && install -d -o carillon -g carillon -m 0750 /var/lib/carillon

# Copy only what the package needs (not .venv, .carillon or the tests), install it, drop the source.
WORKDIR /tmp/carillon-src
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY api ./api
RUN pip install . && rm -rf /tmp/carillon-src

USER carillon
WORKDIR /var/lib/carillon
EXPOSE 8080

# `carillon api` upgrades the schema, then execs gunicorn on CARILLON_API_HOST:CARILLON_API_PORT.
# The compose file runs `carillon worker` and `carillon beat` from the same image.
CMD ["carillon", "api"]
