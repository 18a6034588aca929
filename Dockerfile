# CRM Digital FTE: one image for every process; the argument picks it.
#   docker build -t crm-digital-fte:0.1.0 .
#   docker run --rm -p 8000:8000 --env-file prod.env crm-digital-fte:0.1.0            # gateway
#   docker run --rm --env-file prod.env crm-digital-fte:0.1.0 worker | bridge | migrate | kb ingest
#
# The production image installs the project without the [embedded] extra: PostgreSQL, Temporal
# and Kafka are external (the Helm chart in charts/crm-digital-fte points at them). It runs as
# UID 10001, needs nothing writable but /tmp (read-only root filesystem), and has no
# HEALTHCHECK: Kubernetes probes /livez, /readyz and /api/v1/health instead.
#
# Needs BuildKit (the default builder since Docker 23) for the pip cache mounts.
#
# Both stages must use the same base so the venv's interpreter links stay valid. Pin it by
# digest in CI: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# Compilers live only in this stage, for a dependency without a wheel for the target platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so code changes reuse this layer.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --upgrade pip wheel \
 && pip install -r /tmp/requirements.txt

# Then the project itself, built as a wheel and installed (not editable) into the venv.
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && pip install --no-deps /tmp/wheels/*.whl \
 && pip check \
 && crm-fte --help > /dev/null

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="crm-digital-fte" \
      org.opencontainers.image.description="24/7 AI customer-success agent: gateway, Temporal worker, Kafka bridge" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# HOME and caches point at /tmp, the one writable path when the root filesystem is read-only
# (the chart mounts an emptyDir there). The gateway listens on all interfaces in a container.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    GATEWAY_HOST=0.0.0.0

RUN groupadd --system --gid 10001 crmfte \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin crmfte

# Only the venv: no compilers, no sources, no build caches. Root owns it, so the app cannot
# modify its own code.
COPY --from=builder /opt/venv /opt/venv

# An empty, root-owned working directory: no stray .env is picked up by the settings loader.
WORKDIR /app
USER 10001:10001

# gateway HTTP, worker and bridge health/metrics (the chart's defaults).
EXPOSE 8000 8081 8082

ENTRYPOINT ["crm-fte"]
CMD ["gateway"]
