# Stand-in for python:3.11-slim-bookworm where Docker Hub cannot be pulled: Debian bookworm's own
# Python 3.11 on a debootstrap base (deploy/images.sh imports it as $BASE). `python`, `python -m
# venv` (with pip) and the C.UTF-8 locale behave as in the upstream image for what our Dockerfile uses.
# A base image, like upstream python (root, no service to health-check); derived images set USER.
#checkov:skip=CKV_DOCKER_7: FROM uses ARG BASE whose default is the local tag deploy/images.sh imports from debootstrap
#checkov:skip=CKV_DOCKER_2: a base image runs no service to check
#checkov:skip=CKV_DOCKER_3: a base image; the images built on it run as their own users
ARG BASE=hiring-local/debian:bookworm
FROM ${BASE}
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python --version
CMD ["python3"]
