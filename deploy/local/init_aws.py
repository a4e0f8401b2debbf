#!/usr/bin/env python3
"""Create the local S3 + SQS resources of the hiring pipeline (docker compose's `aws-init` one-shot).

Against a local endpoint (moto server or LocalStack) it makes, idempotently, what Terraform makes
in AWS (deploy/terraform/storage.tf, queue.tf):
- the dead-letter queue `hiring-ingest-dlq` and the queue `hiring-ingest` with a redrive policy
  (maxReceiveCount 5) and a policy that lets only the raw bucket send to it;
- the raw bucket (S3_RAW_BUCKET, default `globant-raw-data`) with versioning enabled;
- the bucket's event notification: s3:ObjectCreated:* on keys ending in `.csv` -> the queue.

Uses botocore only (always installed with aiobotocore), reads AWS_ENDPOINT_URL, AWS_REGION,
S3_RAW_BUCKET, and optionally SQS_QUEUE_NAME, SQS_DLQ_NAME, SQS_MAX_RECEIVE_COUNT,
SQS_VISIBILITY_TIMEOUT. Exits non-zero with one line saying what failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

WAIT_FOR_ENDPOINT_S = 60


def env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def log(message: str) -> None:
    print(f"aws-init: {message}", flush=True)


def wait_for(s3: Any) -> None:
    deadline = time.monotonic() + WAIT_FOR_ENDPOINT_S
    while True:
        try:
            s3.list_buckets()
            return
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                message = f"aws-init: no answer from the endpoint in {WAIT_FOR_ENDPOINT_S}s: {exc}"
                raise SystemExit(message) from exc
            time.sleep(1)


def queue_arn(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return str(attributes["QueueArn"])


def main() -> int:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip() or None
    region = env("AWS_REGION", env("AWS_DEFAULT_REGION", "us-east-1"))
    bucket = env("S3_RAW_BUCKET", "globant-raw-data")
    queue_name = env("SQS_QUEUE_NAME", "hiring-ingest")
    dlq_name = env("SQS_DLQ_NAME", f"{queue_name}-dlq")
    max_receive = env("SQS_MAX_RECEIVE_COUNT", "5")
    visibility = env("SQS_VISIBILITY_TIMEOUT", "300")
    if endpoint is None:
        log("AWS_ENDPOINT_URL is not set: this script only sets up a local endpoint (use Terraform for AWS)")
        return 2

    session = botocore.session.get_session()
    cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"})
    s3 = session.create_client("s3", region_name=region, endpoint_url=endpoint, config=cfg)
    sqs = session.create_client("sqs", region_name=region, endpoint_url=endpoint, config=cfg)
    wait_for(s3)

    # Queues: the DLQ first, then the queue that redrives to it.
    dlq_url = sqs.create_queue(QueueName=dlq_name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes={"MessageRetentionPeriod": "1209600"})
    dlq_arn = queue_arn(sqs, dlq_url)

    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    ingest_arn = queue_arn(sqs, queue_url)
    bucket_arn = f"arn:{ingest_arn.split(':')[1]}:s3:::{bucket}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowRawBucketNotifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": ingest_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": bucket_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(
        QueueUrl=queue_url,
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}),
            "VisibilityTimeout": visibility,
            "ReceiveMessageWaitTimeSeconds": "20",
            "Policy": json.dumps(policy),
        },
    )
    log(f"queue {queue_url} (DLQ {dlq_name}, maxReceiveCount {max_receive})")

    # Bucket, versioning, notification.
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "csv-to-ingest-queue",
                    "QueueArn": ingest_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".csv"}]}},
                }
            ]
        },
    )

    # Read it all back, so a half-made setup fails here rather than in the consumer.
    versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    notifications = s3.get_bucket_notification_configuration(Bucket=bucket).get("QueueConfigurations", [])
    redrive = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    if versioning != "Enabled" or not notifications or "RedrivePolicy" not in redrive:
        log(f"setup incomplete: versioning={versioning} notifications={len(notifications)} redrive={redrive}")
        return 1
    log(f"bucket {bucket} (versioning {versioning}, .csv ObjectCreated -> {queue_name})")
    log("ready")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BotoCoreError, ClientError) as exc:
        print(f"aws-init: failed: {exc}", file=sys.stderr)
        sys.exit(1)
