# jobwatch: the watcher service. Build from the repository root:
#   docker build -t jobwatch .
#
# Base image pinned by tag AND digest (reproducible; a new tag push cannot
# change what we build on). The digest was taken from public repositories that
# pin the same tag; it could not be checked against the registry where this
# file was written. Verify or bump both together with:
#   docker buildx imagetools inspect python:3.13-slim --format '{{.Manifest.Digest}}'
ARG PYTHON_IMAGE=python:3.13-slim@sha256:7c61056e61ac89e852de05f3dc6fa51a6dd2181797bceed46aa725dd7cb2cd3b

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, from the lock file with hashes (--require-hashes): the
# same bytes every build, and a layer that survives code changes.
COPY deploy/requirements.lock ./
RUN python -m venv /opt/jobwatch \
    && /opt/jobwatch/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY rules ./rules
COPY watcher ./watcher
RUN /opt/jobwatch/bin/pip install --no-deps --no-build-isolation .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/jobwatch/bin:$PATH
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin jobwatch
COPY --from=build /opt/jobwatch /opt/jobwatch
USER 10001:10001
# The health/metrics endpoint listens on all interfaces inside the container;
# publish it only where it should be reachable (compose binds it to 127.0.0.1).
ENV JOBWATCH_HEALTH_HOST=0.0.0.0 \
    JOBWATCH_HEALTH_PORT=9187
EXPOSE 9187
# Ready = connected and streaming (or degraded by choice). Other commands run
# from this image (simulate, sweep) serve no endpoint: compose gives them
# their own health check or none.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9187/readyz', timeout=3).status != 200)"]
ENTRYPOINT ["jobwatch"]
CMD ["run"]
