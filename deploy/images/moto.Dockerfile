# Stand-in for motoserver/moto where Docker Hub cannot be pulled: moto's own server from PyPI on the
# Python stand-in, listening on 5000 like the upstream image (same entrypoint contract: args go to
# moto_server). EXTRA_CA_CERTS (PEM text) lets pip trust a TLS-inspecting proxy during this build
# only; nothing of it is left in the image.
#checkov:skip=CKV_DOCKER_7: FROM uses ARG PYTHON_IMAGE whose default is the local stand-in's pinned tag
ARG PYTHON_IMAGE=hiring-local/python:3.11-bookworm
FROM ${PYTHON_IMAGE}
ARG MOTO_VERSION
ARG EXTRA_CA_CERTS=""
RUN python -m venv /opt/moto \
 && /opt/moto/bin/python -c "import pip._vendor.certifi as c; print(c.where())" | xargs cat > /tmp/ca.pem \
 && printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/ca.pem \
 && PIP_CERT=/tmp/ca.pem PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /opt/moto/bin/pip install --quiet "moto[server]==${MOTO_VERSION}" \
 && rm -f /tmp/ca.pem \
 && /opt/moto/bin/moto_server --help > /dev/null
ENV PATH=/opt/moto/bin:$PATH MOTO_PORT=5000
EXPOSE 5000
USER nobody
HEALTHCHECK --interval=3s --timeout=3s --retries=30 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/moto-api/', timeout=2)"]
ENTRYPOINT ["moto_server", "-H", "0.0.0.0", "-p", "5000"]
