# travelbot as a container (Fly.io, or any host that runs images). Build and run:
#   docker build -t travelbot .
#   docker run --env-file .env -p 8080:8080 travelbot
# --build-arg EXTRAS=sentry adds the Sentry SDK (for SENTRY_DSN).

ARG PYTHON_VERSION=3.13

# --- build: the locked dependencies and the project, as a wheel, into /app/.venv -------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG EXTRAS=""
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project ${EXTRAS:+--extra "$EXTRAS"}
COPY bot ./bot
COPY handlers ./handlers
COPY conversations ./conversations
COPY services ./services
COPY supabase ./supabase
RUN uv sync --locked --no-dev --no-editable ${EXTRAS:+--extra "$EXTRAS"}

# --- runtime: the venv only, run by an unprivileged user -------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin travelbot \
    && mkdir -p /app/data \
    && chown travelbot:travelbot /app/data
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080 \
    SQLITE_PATH=/app/data/travelbot.sqlite3
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Liveness only (/healthz, or a worker's heartbeat file): a dependency outage must not get the
# container restarted.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bot.liveness"]
CMD ["travelbot", "webhook"]
