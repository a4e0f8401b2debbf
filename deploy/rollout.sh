#!/usr/bin/env bash
# Roll the ECS services onto one image and move the deploy tag only when every rollout succeeded.
#
#   deploy/rollout.sh IMAGE_URI        (run by deploy/buildspec.yml after pushing <repo>:<commit>)
#
# Environment: ECS_CLUSTER, ECS_SERVICES ("ingest query"), IMAGE_DEPLOY_TAG (default release),
# ROLLOUT_TIMEOUT seconds (default 1800). Needs the AWS CLI and python3.
#
# Why not `update-service --force-new-deployment` + `aws ecs wait services-stable`: the deployment
# circuit breaker rolls a failing deployment back, the rolled-back service is stable, the wait
# succeeds and the pipeline is green while the deploy tag already names the broken image (the next
# scale-out or apply would run it). Here each service gets a new task definition revision naming
# IMAGE_URI itself; the script follows that deployment's own rolloutState (COMPLETED, or FAILED /
# replaced by a rollback) and only when all are COMPLETED is the deploy tag moved to the image.
set -euo pipefail

image="${1:?usage: deploy/rollout.sh IMAGE_URI}"
cluster="${ECS_CLUSTER:?}"
read -r -a services <<<"${ECS_SERVICES:?}"
tag="${IMAGE_DEPLOY_TAG:-release}"
timeout="${ROLLOUT_TIMEOUT:-1800}"
repo_uri="${image%:*}"
repo_name="${repo_uri#*/}"
image_tag="${image##*:}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

declare -A deployment
for s in "${services[@]}"; do
  current="$(aws ecs describe-services --cluster "$cluster" --services "$s" \
    --query 'services[0].taskDefinition' --output text)"
  aws ecs describe-task-definition --task-definition "$current" --query taskDefinition >"$work/$s.json"
  # the same definition with every container of this repository on IMAGE_URI; read-only fields dropped
  python3 - "$work/$s.json" "$repo_uri" "$image" >"$work/$s.new.json" <<'EOF'
import json, sys
td = json.load(open(sys.argv[1]))
repo, image = sys.argv[2], sys.argv[3]
for c in td["containerDefinitions"]:
    if c["image"].split("@")[0].rsplit(":", 1)[0] == repo:
        c["image"] = image
for k in ("taskDefinitionArn", "revision", "status", "requiresAttributes", "compatibilities",
          "registeredAt", "registeredBy", "deregisteredAt"):
    td.pop(k, None)
print(json.dumps(td))
EOF
  revision="$(aws ecs register-task-definition --cli-input-json "file://$work/$s.new.json" \
    --query taskDefinition.taskDefinitionArn --output text)"
  deployment[$s]="$(aws ecs update-service --cluster "$cluster" --service "$s" --task-definition "$revision" \
    --query 'service.deployments[?status==`PRIMARY`] | [0].id' --output text)"
  echo "rollout: $s -> $revision (deployment ${deployment[$s]})"
done

deadline=$((SECONDS + timeout))
for s in "${services[@]}"; do
  id="${deployment[$s]}"
  while :; do
    state="$(aws ecs describe-services --cluster "$cluster" --services "$s" \
      --query "services[0].deployments[?id=='$id'] | [0].[status, rolloutState, rolloutStateReason]" --output text)"
    case "$state" in
      *COMPLETED*)
        echo "rollout: $s COMPLETED"
        break
        ;;
      *FAILED* | None* | "")
        # FAILED, or gone: the circuit breaker replaced it with a rollback deployment
        echo "rollout: $s FAILED (${state:-deployment gone}): ECS rolled back; $tag stays where it was" >&2
        exit 1
        ;;
    esac
    if ((SECONDS > deadline)); then
      echo "rollout: $s not COMPLETED after ${timeout}s (last: $state); $tag not moved" >&2
      exit 1
    fi
    sleep 15
  done
done

manifest="$(aws ecr batch-get-image --repository-name "$repo_name" --image-ids "imageTag=$image_tag" \
  --query 'images[0].imageManifest' --output text)"
if [[ "$(aws ecr batch-get-image --repository-name "$repo_name" --image-ids "imageTag=$tag" \
  --query 'images[0].imageManifest' --output text 2>/dev/null || true)" != "$manifest" ]]; then
  aws ecr put-image --repository-name "$repo_name" --image-tag "$tag" --image-manifest "$manifest" >/dev/null
fi
echo "rollout: every service COMPLETED on $image; $repo_uri:$tag now names it"
