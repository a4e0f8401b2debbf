#!/usr/bin/env bash
# Static checks of the deploy files: docker-compose.yml, Dockerfile, deploy/terraform, deploy/*.yml.
# Called by .ci/run; runnable by hand from anywhere: `bash deploy/check.sh`.
#
# Needs python3 (3.9+, with venv), terraform and PyPI. Tools go into virtualenvs under
# ${HIRING_CI_CACHE:-/tmp/hiring-ci} (made once, reused while their pinned versions stay the same):
#   docker-compose 1.29.2   `docker-compose config -q` (no Docker engine needed)
#   checkov                 over deploy/ and the Dockerfile; any failed check fails the run
# Terraform: `fmt -check`, then `init -backend=false` against a local provider mirror when one is
# found (HIRING_TF_PLUGIN_DIR, or a search of the usual places), else against the registry; if
# neither works (no mirror, no network), init and validate are skipped with a loud warning.
# The Terraform files are copied to the cache first, so the work tree gets no .terraform/ or lock file.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HIRING_CI_CACHE:-/tmp/hiring-ci}"
PYTHON="${PYTHON:-python3}"

COMPOSE_VERSION="1.29.2"
CHECKOV_VERSION="3.3.30"

mkdir -p "$CACHE"
T0=$SECONDS
WARNINGS=0

say() { printf 'deploy-check: %s\n' "$*"; }

loud() {
  WARNINGS=$((WARNINGS + 1))
  printf '\n%s\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  printf '!!! deploy-check WARNING: %s\n' "$@" >&2
  printf '%s\n\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
}

# step NAME COMMAND...: run it quietly, print one line with the time; on failure show its output.
step() {
  local name="$1"
  shift
  local t=$SECONDS log="$CACHE/step.log"
  if "$@" >"$log" 2>&1; then
    say "$name ... ok ($((SECONDS - t))s)"
  else
    local rc=$?
    say "$name ... FAILED ($((SECONDS - t))s, exit $rc)"
    sed 's/^/    /' "$log" >&2
    exit "$rc"
  fi
}

# venv DIR STEP...: a virtualenv made by the pip install STEPs (each one argument, split on spaces),
# remade when they or the Python version change. Errors are checked by hand: `set -e` does not
# apply inside a function that `step` calls in an `if`.
venv() {
  local dir="$1"
  shift
  local stamp="$dir/.hiring-ci-stamp" want pyver args
  pyver="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')" || return 1
  want="$pyver|$*"
  if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "up to date"
    return 0
  fi
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir" || {
    echo "cannot create a virtualenv with $PYTHON (on Debian: apt-get install python3-venv)"
    return 1
  }
  for args in "$@"; do
    # shellcheck disable=SC2086
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/pip" install --quiet $args || return 1
  done
  printf '%s' "$want" >"$stamp"
}

# The directory to give `terraform init -plugin-dir`: one holding
# registry.terraform.io/hashicorp/aws/<version>/<os>_<arch>/terraform-provider-aws_*.
find_tf_mirror() {
  local platform candidates=() dir found
  platform="$(terraform version -json 2>/dev/null | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["platform"])' 2>/dev/null || echo linux_amd64)"
  [[ -n "${HIRING_TF_PLUGIN_DIR:-}" ]] && candidates+=("$HIRING_TF_PLUGIN_DIR")
  candidates+=(/opt/tf-plugins "$HOME/.terraform.d/plugins" "$HOME/.local/share/terraform/plugins"
    /usr/local/share/terraform/plugins /usr/share/terraform/plugins)
  for dir in "${candidates[@]}"; do
    if compgen -G "$dir/registry.terraform.io/hashicorp/aws/*/$platform/terraform-provider-aws*" >/dev/null; then
      echo "$dir"
      return 0
    fi
  done
  found="$(find /opt /usr/local /usr/share /root /home /var/lib -maxdepth 8 -type f \
    -path "*/registry.terraform.io/hashicorp/aws/*/$platform/terraform-provider-aws*" 2>/dev/null | head -n 1 || true)"
  if [[ -n "$found" ]]; then
    # strip /registry.terraform.io/hashicorp/aws/<version>/<platform>/<file>
    dirname "$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$found")")")")")"
    return 0
  fi
  return 1
}

check_buildspec() {
  "$CACHE/compose-venv/bin/python" - "$ROOT/deploy/buildspec.yml" <<'EOF'
import sys, yaml
spec = yaml.safe_load(open(sys.argv[1]))
assert spec.get("version") == 0.2, "buildspec version must be 0.2"
for phase, body in spec["phases"].items():
    for cmd in (body or {}).get("commands", []):
        # an unquoted ': ' turns a command into a mapping
        assert isinstance(cmd, str), f"phase {phase}: a command is not a string: {cmd!r}"
print("buildspec ok")
EOF
}

cd "$ROOT"
say "cache $CACHE"

# ------------------------------------------------------------------ tools
# docker-compose 1.29 needs PyYAML<6: no wheel of it for Python 3.11, and its sdist only builds
# with Cython<3, so it is built first without build isolation (a C compiler is optional: without
# one PyYAML falls back to pure Python).
step "venv docker-compose $COMPOSE_VERSION" venv "$CACHE/compose-venv" \
  "cython<3 setuptools wheel" \
  "--no-build-isolation PyYAML==5.4.1" \
  "docker-compose==$COMPOSE_VERSION"
step "venv checkov $CHECKOV_VERSION" venv "$CACHE/checkov-venv" "checkov==$CHECKOV_VERSION"

# ------------------------------------------------------------------ compose, scripts, buildspec
step "docker-compose config -q" "$CACHE/compose-venv/bin/docker-compose" -f "$ROOT/docker-compose.yml" config -q
step "python scripts compile" env PYTHONPYCACHEPREFIX="$CACHE/pycache" "$PYTHON" -m py_compile \
  deploy/docker/healthcheck.py deploy/local/init_aws.py
step "buildspec.yml parses" check_buildspec

# ------------------------------------------------------------------ terraform
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -f "$TF_CLI_CONFIG_FILE" ]]; then
  unset TF_CLI_CONFIG_FILE # points at a missing file: terraform would only warn about it
fi
if ! command -v terraform >/dev/null 2>&1; then
  loud "terraform is not installed: terraform fmt/init/validate SKIPPED (checkov still scans the .tf files)"
else
  step "terraform fmt -check" terraform fmt -check -recursive -diff deploy/terraform
  work="$CACHE/terraform-work"
  rm -rf "$work"
  mkdir -p "$work"
  cp deploy/terraform/*.tf "$work/"
  if mirror="$(find_tf_mirror)"; then
    step "terraform init (mirror $mirror)" terraform -chdir="$work" init -backend=false -input=false -no-color -plugin-dir="$mirror"
    step "terraform validate" terraform -chdir="$work" validate -no-color
  elif timeout 180 terraform -chdir="$work" init -backend=false -input=false -no-color >"$CACHE/tf-init.log" 2>&1; then
    say "terraform init (registry) ... ok"
    step "terraform validate" terraform -chdir="$work" validate -no-color
  else
    sed 's/^/    /' "$CACHE/tf-init.log" >&2
    loud "no local mirror of hashicorp/aws and the registry is unreachable:" \
      "terraform init and validate SKIPPED (set HIRING_TF_PLUGIN_DIR to a provider mirror)"
  fi
fi

# ------------------------------------------------------------------ checkov
checkov=("$CACHE/checkov-venv/bin/checkov" --quiet --compact --skip-download)
step "checkov deploy/" "${checkov[@]}" -d deploy
step "checkov Dockerfile" "${checkov[@]}" -f Dockerfile
if [[ "${HIRING_CHECK_VERBOSE:-0}" == "1" ]]; then
  "$CACHE/checkov-venv/bin/checkov" --compact --skip-download -d deploy | grep -E 'Passed checks|SKIPPED|Suppress' || true
fi

say "all checks passed in $((SECONDS - T0))s$([[ $WARNINGS -gt 0 ]] && echo " with $WARNINGS WARNING(S) above" || true)"
