# sprintpoints: one image for the four services; SERVICE picks which one a container runs.
#   docker build --build-arg APP_VERSION=<version> -t sprintpoints:<version> .
# Layers go from rarely to often changed: OS packages, pinned dependencies, package metadata,
# then the code, so a code-only change rebuilds in seconds. Build tools (pip, setuptools,
# wheel, python3-venv) stay in the builder stage; the runtime stage gets only the virtualenv
# (which has no pip) and the code.
ARG BASE_IMAGE=sprintpoints/runtime:bookworm

FROM ${BASE_IMAGE} AS deps
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
# A tools venv holds pip/setuptools; the app venv gets no pip at all (pip --python installs into it).
RUN python3 -m venv /opt/tools && python3 -m venv --without-pip /opt/venv
# Optional CA bundle for a TLS-inspecting proxy (see app/build-ca/README.md); builder only.
COPY app/build-ca/ /tmp/build-ca/
COPY app/requirements.txt /tmp/requirements.txt
RUN if [ -s /tmp/build-ca/ca-bundle.pem ]; then export PIP_CERT=/tmp/build-ca/ca-bundle.pem; fi \
 && /opt/tools/bin/pip install wheel==0.45.1 \
 && /opt/tools/bin/pip --python /opt/venv/bin/python install --only-binary=:all: \
        -r /tmp/requirements.txt

# The package's metadata and console script come from pyproject.toml alone (an empty package
# is installed), so they stay cached; the code itself is a plain COPY in the runtime stage.
COPY app/pyproject.toml /src/
RUN mkdir -p /src/sprintpoints/services \
 && touch /src/sprintpoints/__init__.py /src/sprintpoints/services/__init__.py \
 && /opt/tools/bin/pip wheel --no-deps --no-build-isolation -w /tmp/wheels /src \
 && /opt/tools/bin/pip --python /opt/venv/bin/python install --no-deps /tmp/wheels/*.whl \
 && rm -rf /opt/venv/lib/python3.11/site-packages/sprintpoints /tmp/wheels /src

FROM ${BASE_IMAGE} AS runtime
# Fixed non-root identity (uid/gid 10001), so volumes and secrets can be owned by a known id.
RUN groupadd --system --gid 10001 sprintpoints \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin sprintpoints
# Dependencies: this layer changes only when app/requirements.txt does.
COPY --from=deps /opt/venv /opt/venv
# The code: about 150 kB, the only layer a code-only change rebuilds (no pip, no RUN).
COPY app/sprintpoints /opt/venv/lib/python3.11/site-packages/sprintpoints
# The version is declared this late so a new tag (e.g. each git commit) reuses every layer above.
ARG APP_VERSION=dev
LABEL org.opencontainers.image.title="sprintpoints" \
      org.opencontainers.image.description="Sprint-contributor loyalty programme (web, registry, redeem, vendor-stub)" \
      org.opencontainers.image.version="${APP_VERSION}"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_VERSION=${APP_VERSION} \
    PORT=8000 \
    METRICS_PORT=9000 \
    WEB_CONCURRENCY=2 \
    GUNICORN_THREADS=4
WORKDIR /tmp
USER 10001:10001
# 8000: the service; 9000: its Prometheus metrics (served by the gunicorn master, never routed
# by HAProxy's public frontend).
EXPOSE 8000 9000
# The probe runs by path with -I -S: importing the package would load Flask on every probe.
# Every 30 s at rest: a deploy's wait runs the same probe on demand until the container passes.
HEALTHCHECK --interval=30s --timeout=4s --start-period=10s --retries=3 \
    CMD ["python3", "-I", "-S", "/opt/venv/lib/python3.11/site-packages/sprintpoints/healthcheck.py"]
CMD ["gunicorn", "--config", "python:sprintpoints.gunicorn_conf", "sprintpoints:create_app()"]
