# The bridge image: `python -m bridge serve` as user 10001 on a read-only root filesystem.
#
#   docker build -t lark-bridge:0.1.0 .      (BuildKit, the default since Docker 23: RUN --mount)
#
# Both stages must use the same base image: the venv's interpreter is a symlink to its Python.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# .dockerignore lets in only what the package build needs.
COPY . .
# constraints.txt pins every runtime dependency; pip also precompiles the .pyc files, so the
# read-only container never needs to write them. `-P`: import the installed package, not ./bridge.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c constraints.txt ".[otel]" \
    && python -P -c "import bridge.settings"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="lark-bridge" \
      org.opencontainers.image.description="Feishu/Lark meeting-room webhook events to CloudEvents on Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
# PYTHONSAFEPATH: never put the working directory on sys.path (/tmp is writable).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONSAFEPATH=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin bridge
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "bridge"]
CMD ["serve"]
