# syntax=docker/dockerfile:1.7
# One image recipe for every WeMcp service:
#   docker build --build-arg SERVICE=catalog -t wemcp/catalog .
# The builder stage is identical for all services (SERVICE is declared only in the final stage), so
# building all eight reuses one cached dependency layer.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Node.js for hosted npm servers: the image the deployer's Kubernetes manifests run them in
# (WEMCP_DEPLOYER_KUBERNETES_NODE_IMAGE), Debian bookworm like the Python image, so its binary runs here.
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- node: only a source of the node binary and npm -------------------------------------------
FROM ${NODE_IMAGE} AS node

# ---- console: the web console (web/, the guide in docs/guide), built once for the gateway --------
FROM ${NODE_IMAGE} AS console
WORKDIR /src
COPY web/package.json web/package-lock.json ./web/
RUN cd web && npm ci --no-audit --no-fund --loglevel=error
COPY web ./web
COPY docs/guide ./docs/guide
RUN cd web && node build.mjs

# ---- builder: the uv workspace, installed (not editable) into /app/.venv ----------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
# the same uv as the Makefile's UV_VERSION
RUN pip install uv==0.13.8
WORKDIR /src
COPY pyproject.toml uv.lock .python-version ./
# every workspace member (pyproject.toml [tool.uv.workspace] members): `uv sync --frozen` needs them all
COPY libs ./libs
COPY services ./services
COPY sdk/python ./sdk/python
# --no-editable: the packages (with their migrations) land in the venv, so the runtime stage needs
# nothing but /app/.venv. --no-install-package wemcp-testkit: test support (libs/testkit) is a
# workspace member, so --all-packages would install it; production images do not carry it.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-packages --no-dev --no-editable --no-install-package wemcp-testkit

# ---- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# What the deployer needs to install and run hosted servers (README.md#isolation), in the layers all
# eight images share (before SERVICE is declared); the other services never run them:
# - bubblewrap, the sandbox (docker-compose.yml grants the deployer container what it needs to run it
#   unprivileged; docs/containers.md#hosted-servers),
# - node and npm (npm packages: `npm install`, then `node <bin>`),
# - uv, the Makefile's version, from the builder (PyPI packages: one venv per package@version).
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
COPY --from=builder /usr/local/bin/uv /usr/local/bin/uvx /usr/local/bin/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version && uv --version && bwrap --version
RUN groupadd --system --gid 10001 wemcp \
 && useradd --system --uid 10001 --gid wemcp --home-dir /home/wemcp --create-home \
        --shell /usr/sbin/nologin wemcp \
 && mkdir -p /var/lib/wemcp \
 && chown wemcp:wemcp /var/lib/wemcp
COPY --from=builder /app/.venv /app/.venv
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/wemcp-entrypoint
COPY --chmod=0644 deploy/docker/healthcheck.py /usr/local/lib/wemcp/healthcheck.py
# the console's built files; the gateway serves them at / (a few hundred KiB in every image)
COPY --from=console /src/web/dist /app/web/dist
ENV PATH=/app/.venv/bin:$PATH \
    WEMCP_GATEWAY_CONSOLE_DIR=/app/web/dist \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json

ARG SERVICE
# Fail the build early on a missing or unknown service name.
RUN test -n "${SERVICE}" \
 && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('wemcp.${SERVICE}.main') is None)"
# The entrypoint derives WEMCP_<SERVICE>_HOST=0.0.0.0 and WEMCP_<SERVICE>_PORT=8000 from SERVICE
# (a Dockerfile cannot upper-case a build argument); set either explicitly to override.
ENV SERVICE=${SERVICE}
LABEL org.opencontainers.image.title="wemcp-${SERVICE}" \
      org.opencontainers.image.description="WeMcp ${SERVICE} service"

# Relative data paths of the services (.data/..., .wemcp/...) resolve here; mount a volume to keep them.
WORKDIR /var/lib/wemcp
USER wemcp:wemcp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/wemcp/healthcheck.py"]
ENTRYPOINT ["wemcp-entrypoint"]
CMD ["sh", "-c", "exec python -m wemcp.${SERVICE}.main"]
