#!/usr/bin/env bash
# Build every image docker-compose.yml and the container test backend (HIRING_TEST_STACK=containers)
# need, so that afterwards a plain `docker compose up` / `docker-compose up` pulls nothing.
#
#   bash deploy/images.sh            # upstream images where they can be pulled, else local stand-ins
#   HIRING_IMAGES=local bash deploy/images.sh      # stand-ins only (no pull attempts)
#   HIRING_IMAGES=upstream bash deploy/images.sh   # upstream only: fail if one cannot be pulled
#
# Upstream images and their stand-ins (never tagged with an upstream name):
#   python:3.11-slim-bookworm  -> hiring-local/python:3.11-bookworm   Debian's Python 3.11 on a debootstrap base
#   postgres:16-alpine         -> hiring-local/postgres:15-bookworm   Debian's PostgreSQL 15, the official
#                                                                     image's POSTGRES_* contract, pg_isready
#   motoserver/moto:$MOTO      -> hiring-local/moto:$MOTO             moto[server]==$MOTO from PyPI
#   jaegertracing/all-in-one   -> hiring-local/otlp-receiver:1        the project's OTLP/HTTP receiver with
#                                                                     Jaeger's /api/traces query endpoint
# and the project image hiring-pipeline:local (the root Dockerfile, on whichever Python image).
#
# It writes the choice to `.env` in the checkout (HIRING_*_IMAGE=...), which compose reads, and
# prints it; `set -a; . ./.env; set +a` gives the same to the tests. The debootstrap base (about
# 2 minutes) is cached as a tarball in $HIRING_IMAGE_CACHE (/var/cache/hiring); a stand-in is rebuilt
# only when its recipe changes (label hiring.recipe). Where a TLS-inspecting proxy sits in front of
# PyPI, the host's extra CA certificates ($HIRING_EXTRA_CA_DIR, default /usr/local/share/ca-certificates)
# are handed to pip for the build only (build arg EXTRA_CA_CERTS; not in any final image layer).
# Needs a Docker engine (deploy/dockerd.sh start) and, for stand-ins, root for debootstrap.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HIRING_IMAGE_CACHE:-/var/cache/hiring}"
MODE="${HIRING_IMAGES:-auto}"
CA_DIR="${HIRING_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
DEBIAN_MIRROR="${HIRING_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PULL_TIMEOUT="${HIRING_PULL_TIMEOUT:-60}"

MOTO_VERSION="5.2.5"
UP_PYTHON="python:3.11-slim-bookworm"
UP_POSTGRES="postgres:16-alpine"
UP_MOTO="motoserver/moto:$MOTO_VERSION"
UP_JAEGER="jaegertracing/all-in-one:1.65.0"
APP_IMAGE="${HIRING_APP_IMAGE:-hiring-pipeline:local}"

LOCAL_BASE="hiring-local/debian:bookworm"
LOCAL_PYTHON="hiring-local/python:3.11-bookworm"
LOCAL_POSTGRES="hiring-local/postgres:15-bookworm"
LOCAL_MOTO="hiring-local/moto:$MOTO_VERSION"
LOCAL_OTLP="hiring-local/otlp-receiver:1"

export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" # the classic builder: no buildx plugin needed
T0=$SECONDS
say() { printf 'images.sh: %s\n' "$*" >&2; }
# docker build, without the classic builder's deprecation notice (the notice is all it says on stderr
# when the build works; errors still show)
build() {
  docker build "$@" 2> >(grep -v -E '^(DEPRECATED: The legacy builder|\s+BuildKit is currently disabled|\s+environment-variable\.|$)' >&2)
}
die() {
  say "ERROR: $*"
  exit 1
}

docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
  die "no Docker engine answers (start one: bash deploy/dockerd.sh start)"
cd "$ROOT"

have() { docker image inspect "$1" >/dev/null 2>&1; }

# pull IMAGE: true when IMAGE is here afterwards (already, or pulled now).
pull() {
  have "$1" && return 0
  [[ "$MODE" == local ]] && return 1
  local t=$SECONDS
  if timeout "$PULL_TIMEOUT" docker pull -q "$1" >/dev/null 2>&1; then
    say "pulled $1 ($((SECONDS - t))s)"
    return 0
  fi
  say "cannot pull $1 ($((SECONDS - t))s)$([[ "$MODE" == auto ]] && echo ': using a local stand-in' || true)"
  [[ "$MODE" == upstream ]] && die "HIRING_IMAGES=upstream and $1 cannot be pulled"
  return 1
}

# recipe DOCKERFILE CONTEXT ARG...: a short hash of what a stand-in is built from
recipe() {
  local file="$1" ctx="$2"
  shift 2
  { cat "$file" $(find "$ctx" -maxdepth 1 -type f | sort) && printf '%s\n' "$@"; } | sha256sum | cut -c1-16
}

# fresh IMAGE HASH: the image exists and was built from this recipe
fresh() { [[ "$(docker image inspect -f '{{index .Config.Labels "hiring.recipe"}}' "$1" 2>/dev/null)" == "$2" ]]; }

extra_ca() {
  local f out=""
  for f in "$CA_DIR"/*.crt; do
    [[ -f "$f" ]] && out+="$(cat "$f")"$'\n'
  done
  printf '%s' "$out"
}

base() {
  have "$LOCAL_BASE" && return 0
  local tar="$CACHE/debian-bookworm-minbase.tar" t=$SECONDS
  mkdir -p "$CACHE"
  if [[ ! -s "$tar" ]]; then
    command -v debootstrap >/dev/null 2>&1 || {
      say "installing debootstrap (apt-get)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    local dir="$CACHE/bookworm-root.$$"
    rm -rf "$dir"
    say "debootstrap bookworm (minbase; about 2 minutes, cached afterwards in $tar)"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$dir" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
      die "debootstrap failed; see $CACHE/debootstrap.log"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$dir"
  fi
  docker import -c 'CMD ["bash"]' -c 'ENV LANG=C.UTF-8' "$tar" "$LOCAL_BASE" >/dev/null
  say "base $LOCAL_BASE ready ($((SECONDS - t))s)"
}

# standin TAG DOCKERFILE CONTEXT [BUILD-ARG...]
standin() {
  local tag="$1" file="$2" ctx="$3" hash t=$SECONDS
  shift 3
  hash="$(recipe "$file" "$ctx" "$@")"
  if fresh "$tag" "$hash"; then
    say "$tag up to date"
    return 0
  fi
  local args=(--label "hiring.recipe=$hash" -t "$tag" -f "$file")
  local a
  for a in "$@"; do args+=(--build-arg "$a"); done
  build -q "${args[@]}" --build-arg "EXTRA_CA_CERTS=$(extra_ca)" "$ctx" >/dev/null ||
    die "building $tag failed"
  say "built $tag ($((SECONDS - t))s)"
}

# ------------------------------------------------------------------ third-party images
if pull "$UP_PYTHON"; then
  PYTHON_IMAGE="$UP_PYTHON"
else
  base
  standin "$LOCAL_PYTHON" deploy/images/python.Dockerfile deploy/images "BASE=$LOCAL_BASE"
  PYTHON_IMAGE="$LOCAL_PYTHON"
fi

if pull "$UP_POSTGRES"; then
  POSTGRES_IMAGE="$UP_POSTGRES"
else
  base
  standin "$LOCAL_POSTGRES" deploy/images/postgres/Dockerfile deploy/images/postgres "BASE=$LOCAL_BASE"
  POSTGRES_IMAGE="$LOCAL_POSTGRES"
fi

if pull "$UP_MOTO"; then
  MOTO_IMAGE="$UP_MOTO"
else
  standin "$LOCAL_MOTO" deploy/images/moto.Dockerfile deploy/images \
    "PYTHON_IMAGE=$PYTHON_IMAGE" "MOTO_VERSION=$MOTO_VERSION"
  MOTO_IMAGE="$LOCAL_MOTO"
fi

# ------------------------------------------------------------------ the project's image
t=$SECONDS
build -q -t "$APP_IMAGE" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
  --build-arg "EXTRA_CA_CERTS=$(extra_ca)" . >/dev/null || die "building $APP_IMAGE failed"
say "built $APP_IMAGE from $PYTHON_IMAGE ($((SECONDS - t))s, $(docker image inspect -f '{{.Size}}' "$APP_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"

if pull "$UP_JAEGER"; then
  JAEGER_IMAGE="$UP_JAEGER"
else
  # on the project image: aiohttp and opentelemetry-proto are already there
  standin "$LOCAL_OTLP" deploy/images/otlp/Dockerfile deploy/images/otlp "APP_IMAGE=$APP_IMAGE"
  JAEGER_IMAGE="$LOCAL_OTLP"
fi

# ------------------------------------------------------------------ the choice, for compose and tests
cat >.env <<EOF
# written by deploy/images.sh: the images docker-compose.yml and HIRING_TEST_STACK=containers use
HIRING_APP_IMAGE=$APP_IMAGE
HIRING_PYTHON_IMAGE=$PYTHON_IMAGE
HIRING_POSTGRES_IMAGE=$POSTGRES_IMAGE
HIRING_MOTO_IMAGE=$MOTO_IMAGE
HIRING_JAEGER_IMAGE=$JAEGER_IMAGE
EOF
sed -n '2,$p' .env >&2
say "done in $((SECONDS - T0))s"
