#!/usr/bin/env bash
# `terraform plan` of deploy/terraform against moto's server (every AWS service the configuration
# uses pointed there), then, with TF_MOTO_APPLY=1, `terraform apply` + `destroy` as far as moto goes.
# Called by .ci/run; runnable by hand: `bash deploy/terraform-moto.sh`.
#
# Needs terraform, the AWS provider (a local mirror, as deploy/check.sh finds it, or the registry)
# and moto's server: the project's `.venv` (the dev extra) or any `python3 -m moto.server`.
# The .tf files are copied to a work directory with a provider override; the work tree is untouched.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${HIRING_TF_MOTO_WORK:-${TMPDIR:-/tmp}/hiring-tf-moto}"
PYTHON="${HIRING_MOTO_PYTHON:-$ROOT/.venv/bin/python}"
T0=$SECONDS
say() { printf 'terraform-moto: %s\n' "$*" >&2; }

[[ -x "$PYTHON" ]] || PYTHON=python3
"$PYTHON" -c 'import moto.server' 2>/dev/null || {
  say "moto is not importable by $PYTHON: pip install -e '.[dev]'"
  exit 1
}

port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
endpoint="http://127.0.0.1:$port"
rm -rf "$WORK"
mkdir -p "$WORK"
"$PYTHON" -m moto.server -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null; wait "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fsS "$endpoint/moto-api/" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$endpoint/moto-api/" >/dev/null || {
  say "moto server did not start:"
  cat "$WORK/moto.log" >&2
  exit 1
}

cp "$ROOT"/deploy/terraform/*.tf "$WORK/"
# Every service the configuration calls, pointed at moto (the provider's `endpoints` names).
services=(apigatewayv2 applicationautoscaling cloudwatch codebuild codeconnections codepipeline
  codestarconnections ec2 ecr ecs elbv2 events iam kms logs rds s3 secretsmanager servicediscovery sns
  sqs sts)
{
  echo '# written by deploy/terraform-moto.sh: the provider pointed at moto'"'"'s server'
  echo 'provider "aws" {'
  echo '  access_key                  = "test"'
  echo '  secret_key                  = "test"'
  echo '  skip_credentials_validation = true'
  echo '  skip_requesting_account_id  = true'
  echo '  skip_metadata_api_check     = true'
  echo '  s3_use_path_style           = true'
  echo '  endpoints {'
  for s in "${services[@]}"; do printf '    %s = "%s"\n' "$s" "$endpoint"; done
  echo '  }'
  echo '}'
} >"$WORK/moto_override.tf"

export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -f "$TF_CLI_CONFIG_FILE" ]]; then unset TF_CLI_CONFIG_FILE; fi
mirror="${HIRING_TF_PLUGIN_DIR:-}"
if [[ -z "$mirror" ]]; then
  found="$(find /opt /usr/local /usr/share /root /home /var/lib -maxdepth 9 -type f -name 'terraform-provider-aws*' 2>/dev/null | head -n1 || true)"
  # <mirror>/registry.terraform.io/hashicorp/aws/<version>/<os_arch>/terraform-provider-aws_*
  [[ -n "$found" ]] && mirror="$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$found")")")")")")"
fi
init=(init -backend=false -input=false -no-color)
[[ -n "$mirror" ]] && init+=("-plugin-dir=$mirror")
t=$SECONDS
terraform -chdir="$WORK" "${init[@]}" >"$WORK/init.log" 2>&1 || {
  cat "$WORK/init.log" >&2
  exit 1
}
say "init ok ($((SECONDS - t))s${mirror:+, mirror $mirror})"

t=$SECONDS
if ! terraform -chdir="$WORK" plan -input=false -no-color -lock=false -out=tf.plan >"$WORK/plan.log" 2>&1; then
  cat "$WORK/plan.log" >&2
  say "plan FAILED against moto ($((SECONDS - t))s)"
  exit 1
fi
say "plan ok ($((SECONDS - t))s): $(grep -E '^Plan:' "$WORK/plan.log")"

if [[ "${TF_MOTO_APPLY:-0}" == "1" ]]; then
  t=$SECONDS
  if terraform -chdir="$WORK" apply -input=false -no-color -auto-approve tf.plan >"$WORK/apply.log" 2>&1; then
    say "apply ok ($((SECONDS - t))s)"
  else
    say "apply stopped ($((SECONDS - t))s); errors:"
    grep -E '^Error:|with aws_' "$WORK/apply.log" | sed 's/^/    /' >&2 || true
  fi
  terraform -chdir="$WORK" destroy -input=false -no-color -auto-approve >"$WORK/destroy.log" 2>&1 &&
    say "destroy ok" || say "destroy stopped: see $WORK/destroy.log"
fi
say "done in $((SECONDS - T0))s (logs in $WORK)"
