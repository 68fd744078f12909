# syntax=docker/dockerfile:1.7
# Midwatch: one image for every process. The argument picks the process:
#   midwatch api | worker | scheduler | dashboard | db upgrade
# Build:  docker build -t midwatch:0.1.0 .
# Pin by digest in CI (e.g. python:3.11.13-slim-bookworm@sha256:...) and let Renovate bump it.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# uv binary only, from the official image, pinned by tag (same uv that writes uv.lock).
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---------- builder: resolve and install into /app/.venv from uv.lock ----------
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Dependencies first (cached layer while only source changes).
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed as a regular (non-editable) package.
COPY pyproject.toml uv.lock README.md ./
COPY midwatch ./midwatch
COPY platform_api ./platform_api
COPY runner ./runner
COPY dashboard ./dashboard
COPY tenants ./tenants
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---------- runtime: no uv, no compilers, no caches, no source tree ----------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="midwatch" \
      org.opencontainers.image.description="Run AI agents unattended for many tenants" \
      org.opencontainers.image.version="0.1.0"

RUN groupadd --system --gid 10001 midwatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin midwatch \
 && python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
 && rm -rf /root/.cache /var/lib/apt/lists/* /tmp/*

# Owned by root and read-only for the app user: the app never writes outside /tmp.
COPY --from=builder /app/.venv /app/.venv

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MIDWATCH_HOST=0.0.0.0 \
    MIDWATCH_DATA_DIR=/tmp/midwatch
WORKDIR /tmp

USER 10001:10001
# api, dashboard, scheduler health (9090), worker health (9091; a second worker on a host takes the next free one)
EXPOSE 8080 8501 9090 9091
ENTRYPOINT ["midwatch"]
CMD ["api"]
