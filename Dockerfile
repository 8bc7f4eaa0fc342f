# syntax=docker/dockerfile:1
# gitlab-activity-exporter container image.
#
#   docker build -t gitlab-activity-exporter .
#   docker run --read-only -p 9842:9842 -e GITLAB_TOKEN \
#     -v "$PWD/config.yml:/etc/gitlab-activity-exporter/config.yml:ro" gitlab-activity-exporter
#   docker run --read-only -p 9842:9842 gitlab-activity-exporter demo
#
# docs/deploy.md has the whole way: build, push, run with Docker or install with Helm.
# The build and install steps are replayed by tests/test_dockerfile.py, so keep the
# wheel build and the venv install in RUN lines of their own stages.

# The base image, pinned by digest so that a rebuild is the same image. To move to the
# newest python:3.11-slim, put the digest this prints here:
#   docker buildx imagetools inspect python:3.11-slim | awk '/^Digest:/ {print $2}'
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# --- stage 1: build wheels for the project and every dependency ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m pip wheel --wheel-dir /wheels .

# --- stage 2: the wheels installed into a virtual environment, nothing else -------------
FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# The wheels are mounted for this one step, never copied: no layer of the image has them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels gitlab-activity-exporter \
    && useradd --system --uid 65532 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin exporter \
    && install -d -o 65532 -g 65532 /var/lib/gitlab-activity-exporter
# The exporter writes nothing at runtime but scan.state_file: it runs with a read-only
# root filesystem. Mount a volume at /var/lib/gitlab-activity-exporter for the state
# file (a new Docker volume takes the directory's owner, 65532, from the image).
USER 65532:65532
EXPOSE 9842
# For plain Docker (Kubernetes uses the chart's probes): the liveness endpoint on the
# default port. With another --web.listen-address or TLS, override it with
# docker run --health-cmd.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9842/-/healthy', timeout=4)"]
ENTRYPOINT ["gitlab-activity-exporter"]
CMD ["serve", "--config.file", "/etc/gitlab-activity-exporter/config.yml"]
