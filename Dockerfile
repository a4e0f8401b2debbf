# The one image both services run from: `hiring ingest`, `hiring query`, `hiring migrate`.
#
#   docker build -t hiring-pipeline .
#   docker run --rm -p 8080:8080 --env-file .env hiring-pipeline query --port 8080
#
# Works with the classic builder and BuildKit (no heredocs, no cache mounts).

# The base is an ARG so that CI can pull it through a registry mirror (deploy/buildspec.yml); the
# default is a pinned tag, which checkov cannot see through the ARG:
#checkov:skip=CKV_DOCKER_7: FROM uses ARG PYTHON_IMAGE whose default is the pinned tag python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ------------------------------------------------------ the runtime requirements
# [project.dependencies] of pyproject.toml as a requirements file: the build stage copies only that
# file, so its dependency layer is rebuilt when the dependencies change, not when an extra, a tool
# setting or the version does. moto and pgserver are in the `dev` extra, which the image leaves out.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && cat /tmp/requirements.txt

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/hiring
ENV PATH=/opt/hiring/bin:$PATH
WORKDIR /src

# Where a TLS-inspecting proxy sits between the build and PyPI: the PEM text of the CA certificates
# to trust, added to pip's own bundle for this stage only (deploy/images.sh passes the host's).
# Certificates are public; nothing of this reaches the runtime stage.
ARG EXTRA_CA_CERTS=""
RUN python -c "import pip._vendor.certifi as c; print(c.where())" | xargs cat > /etc/pip-build-ca.pem \
 && printf '%s\n' "$EXTRA_CA_CERTS" >> /etc/pip-build-ca.pem
ENV PIP_CERT=/etc/pip-build-ca.pem

# Third-party dependencies first, in their own layer.
COPY --from=requirements /tmp/requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# Then the project itself (the context is whitelisted by .dockerignore).
COPY . .
# The services (and compose's aws-init provisioning) must import without the dev extra.
RUN pip install --no-deps . \
 && python -P -c "import services.cli, services.ingest.app, services.ingest.cli_replay, services.query.app, services.dev.provisioning, shared.db" \
 && python -m compileall -q /opt/hiring/lib \
 && python -m pip uninstall -y pip setuptools wheel \
 && hiring --help > /dev/null

# -------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="hiring-pipeline" \
      org.opencontainers.image.description="Hiring pipeline: ingest consumer, query API and migrations (entrypoint: hiring)"

# tini reaps children and forwards SIGTERM to `hiring` (a PID 1 without handlers ignores it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 hiring \
 && useradd --system --uid 10001 --gid hiring --create-home --home-dir /home/hiring --shell /usr/sbin/nologin hiring

# /tmp is the one writable path with a read-only root file system. Fargate mounts an empty volume
# there owned by root, mode 0755 (nothing writable for user 10001) unless the image declares it a
# volume, whose mode (1777) ECS then copies; compose's tmpfs and Docker's anonymous volumes do the same.
RUN chmod 1777 /tmp
VOLUME ["/tmp"]

COPY --from=build /opt/hiring /opt/hiring
COPY deploy/docker/healthcheck.py /usr/local/bin/hiring-healthcheck

ENV PATH=/opt/hiring/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /home/hiring
EXPOSE 8080

# `query`: GET /healthz on its --port; other commands: the process being up is the signal.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/hiring-healthcheck"]

ENTRYPOINT ["tini", "--", "hiring"]
CMD ["query", "--port", "8080"]
