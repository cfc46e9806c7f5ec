# syntax=docker/dockerfile:1
# terrarium-webchat: one image for the gateway (default), the worker and the demo agent.
#
#   docker build -t terrarium-webchat .
#   docker run ... terrarium-webchat                       # python -m gateway
#   docker run ... terrarium-webchat python -m worker
#   docker run ... terrarium-webchat python -m demo.agent --host 0.0.0.0 --port 8099
#   docker exec -it <gateway container> terrarium-ops chats    # the operators' console
#
# Secrets: pass NAME_FILE=/run/secrets/... for CHAT_PASSWORD, REDIS_URL, METRICS_TOKEN,
# AGENT_API_KEY, SEARCH_API_KEY, GITHUB_TOKEN (see infra/docker/entrypoint.sh).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The locked runtime set first (versions and hashes: scripts/lock), so a change in the code
# alone does not reinstall the dependencies and every build installs the same files.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY bus ./bus
COPY gateway ./gateway
COPY worker ./worker
COPY tools ./tools
COPY demo ./demo
COPY logsetup ./logsetup
COPY ops ./ops
RUN pip install --no-deps . && python -c "import gateway, worker, bus, tools, demo, logsetup, ops"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=4100 \
    CONTENT_DIR=/app/content
RUN groupadd --system --gid 10001 terrarium \
    && useradd --system --uid 10001 --gid terrarium --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin terrarium
COPY --from=build /opt/venv /opt/venv
COPY content /app/content
COPY infra/docker/entrypoint.sh /usr/local/bin/terrarium-entrypoint
WORKDIR /app
USER 10001:10001
EXPOSE 4100
# The gateway's liveness (/healthz); compose overrides it for the worker and the agent.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '4100') + '/healthz', timeout=3)"]
ENTRYPOINT ["/usr/local/bin/terrarium-entrypoint"]
CMD ["python", "-m", "gateway"]
