# gitlab-activity-exporter container image.
#
#   docker build -t gitlab-activity-exporter .
#   docker run --read-only -p 9842:9842 -e GITLAB_TOKEN \
#     -v "$PWD/config.yml:/etc/gitlab-activity-exporter/config.yml:ro" gitlab-activity-exporter
#   docker run --read-only -p 9842:9842 gitlab-activity-exporter demo --web.listen-address :9842
#
# The build and install steps are replayed by tests/test_dockerfile.py, so keep the
# wheel build and the venv install in RUN lines of their own stages.

# --- stage 1: build wheels for the project and every dependency ----------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m pip wheel --wheel-dir /wheels .

# --- stage 2: the wheels installed into a virtual environment, nothing else -------------
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /wheels /wheels
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels gitlab-activity-exporter \
    && rm -rf /wheels \
    && useradd --system --uid 65532 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin exporter
# The exporter writes nothing at runtime: it runs with a read-only root filesystem.
USER 65532:65532
EXPOSE 9842
ENTRYPOINT ["gitlab-activity-exporter"]
CMD ["serve", "--config.file", "/etc/gitlab-activity-exporter/config.yml"]
