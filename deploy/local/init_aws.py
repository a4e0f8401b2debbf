#!/usr/bin/env python3
"""docker compose's `aws-init` one-shot: the pipeline's bucket, queue, DLQ and notification on the
local S3 + SQS endpoint, exactly as `hiring dev` makes them (services/dev/provisioning.py, the one
definition; its values are Terraform's).

Runs inside the project image (botocore only). Reads AWS_ENDPOINT_URL (required: Terraform owns
AWS itself), AWS_REGION, S3_RAW_BUCKET and SQS_QUEUE_URL (its last path segment is the queue's
name). Waits up to 60 s for the endpoint; exits non-zero with one line saying what failed.
"""

from __future__ import annotations

import os
import sys
import time

from botocore.exceptions import BotoCoreError, ClientError

from services.dev.provisioning import QUEUE_NAME, aws_clients, provision

WAIT_FOR_ENDPOINT_S = 60


def log(message: str) -> None:
    print(f"aws-init: {message}", flush=True)


def main() -> int:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip() or None
    if endpoint is None:
        log("AWS_ENDPOINT_URL is not set: this sets up a local endpoint only (Terraform makes AWS's)")
        return 2
    region = os.environ.get("AWS_REGION", "").strip() or "us-east-1"
    bucket = os.environ.get("S3_RAW_BUCKET", "").strip() or "globant-raw-data"
    queue_url = os.environ.get("SQS_QUEUE_URL", "").strip()
    queue_name = queue_url.rstrip("/").rsplit("/", 1)[-1] if queue_url else QUEUE_NAME

    s3, _ = aws_clients(endpoint, region)
    deadline = time.monotonic() + WAIT_FOR_ENDPOINT_S
    while True:
        try:
            s3.list_buckets()
            break
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                log(f"no answer from {endpoint} in {WAIT_FOR_ENDPOINT_S}s: {exc}")
                return 1
            time.sleep(1)

    made = provision(endpoint, region, bucket, queue_name)
    log(f"bucket {made.bucket} (versioned, notifies {made.queue_arn}); DLQ {made.dlq_arn}")
    log("ready")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BotoCoreError, ClientError) as exc:
        log(f"failed: {exc}")
        sys.exit(1)
