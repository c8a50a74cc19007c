# jobwatch: the watcher service. Build from the repository root:
#   docker build -t jobwatch .
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin jobwatch
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rules ./rules
COPY watcher ./watcher
RUN pip install . && rm -rf /root/.cache

USER jobwatch
# The health/metrics endpoint listens on all interfaces inside the container;
# publish it only where it should be reachable (compose binds it to 127.0.0.1).
ENV JOBWATCH_HEALTH_HOST=0.0.0.0 \
    JOBWATCH_HEALTH_PORT=9187
EXPOSE 9187
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9187/healthz', timeout=3).status != 200)"]
ENTRYPOINT ["jobwatch"]
CMD ["run"]
