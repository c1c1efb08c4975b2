# fixloop: one image for every subcommand (`fixloop worker`, `fixloop gateway`, ...).
#   docker build -t fixloop:0.1.0 .
#   docker run --rm fixloop:0.1.0 --help
# Used by deploy/compose/compose.yaml and, pushed to a registry, by deploy/kubernetes (image "fixloop").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY fixloop ./fixloop
COPY integrations ./integrations
COPY workflows ./workflows
COPY activities ./activities
COPY sandbox ./sandbox
RUN pip install . \
    && rm -rf /src \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fixloop

# Nothing is written at run time: the container runs with a read-only root filesystem (a tmpfs on /tmp at most).
WORKDIR /
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8787 9464
ENTRYPOINT ["fixloop"]
CMD ["--help"]
