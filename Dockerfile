# dagmirror: the fleet sidecar / init container image.
#   docker build -t dagmirror .
#   docker run --rm dagmirror run s3://bucket/dags/production /dags --http 0.0.0.0:9090
#   make image          (docker or podman; behind a TLS-intercepting proxy: make image CA=/path/to/ca-bundle.crt)
# Install steps live in docker/install.sh so CI can also run exactly them without a container engine.

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
# A proxy's CA comes in as the build secret "ca", mounted for the pip steps only: it never lands in a layer.
# The pinned packages first, in a layer of their own that a change to the code does not invalidate.
COPY docker/install.sh docker/requirements.lock ./docker/
RUN --mount=type=secret,id=ca,required=false sh docker/install.sh /opt/dagmirror /src deps
COPY pyproject.toml README.md ./
COPY dagmirror/ ./dagmirror/
RUN --mount=type=secret,id=ca,required=false sh docker/install.sh /opt/dagmirror /src app

FROM python:3.11.14-slim-bookworm
RUN groupadd --gid 10001 dagmirror \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /home/dagmirror dagmirror \
    && mkdir -p /dags \
    && chown 10001:10001 /dags
COPY --from=build /opt/dagmirror /opt/dagmirror
ENV PATH=/opt/dagmirror/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/dagmirror
VOLUME ["/dags"]
EXPOSE 9090
# /healthz answers while `dagmirror run` (default --http 127.0.0.1:9090) is alive; Kubernetes probes should use
# /readyz on the port given to --http (see docs/operations.md). One-shot `sync` containers exit before it matters.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=4)"]
ENTRYPOINT ["dagmirror"]
CMD ["--help"]
