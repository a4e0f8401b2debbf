"""The pipeline's S3 + SQS resources, written once for every local path.

`hiring dev` (services/dev/supervisor.py through localaws), the test stacks (tests/system/stack.py) and
docker compose's `aws-init` one-shot (deploy/local/init_aws.py, inside the image) all call
`provision`. The values are Terraform's (deploy/terraform/queue.tf, storage.tf, variables.tf);
tests/unit/test_provisioning_matches_terraform.py reads the .tf files and fails when they drift.

botocore only (it comes with aiobotocore, a runtime dependency), so the image can run it without
the `dev` extra. Works against moto's server, LocalStack, or AWS itself (endpoint_url=None).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.config import Config

QUEUE_NAME = "hiring-ingest"
VISIBILITY_TIMEOUT_SECONDS = 300  # var.sqs_visibility_timeout_seconds; consumers extend it per message
MAX_RECEIVE_COUNT = 5  # var.sqs_max_receive_count: receives before the dead-letter queue
RECEIVE_WAIT_SECONDS = 20  # long polling
QUEUE_RETENTION_SECONDS = 4 * 24 * 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: failed events wait for a person
NOTIFICATION_ID = "raw-objects-to-ingest-queue"
# Created and removed: a delete (marker or version) retracts what the object contributed (CONTRACT §2).
# No key filter: S3's suffix filters are case-sensitive and one rule each, so `.csv` alone would drop
# `JOBS.CSV` and `2021.csv.gz` silently; the consumer decides what to skip and records why.
NOTIFICATION_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")


@dataclass(frozen=True)
class Provisioned:
    queue_url: str
    dlq_url: str
    queue_arn: str
    dlq_arn: str
    bucket: str


def aws_clients(endpoint_url: str | None, region: str) -> tuple[Any, Any]:
    """botocore S3 and SQS clients; against a local endpoint, dummy credentials unless some are set."""
    session = botocore.session.get_session()
    kwargs: dict[str, Any] = {"region_name": region, "endpoint_url": endpoint_url}
    if endpoint_url is not None and not os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(aws_access_key_id="test", aws_secret_access_key="test")
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
    return (
        session.create_client("s3", config=config, **kwargs),
        session.create_client("sqs", config=config, **kwargs),
    )


def queue_policy(queue_arn: str, bucket: str) -> dict[str, Any]:
    """The ingest queue's policy: only the raw bucket, of this account, may send (queue.tf's)."""
    _, partition, _, _, account, _ = queue_arn.split(":", 5)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "RawBucketNotifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {
                    "ArnEquals": {"aws:SourceArn": f"arn:{partition}:s3:::{bucket}"},
                    "StringEquals": {"aws:SourceAccount": account},
                },
            }
        ],
    }


def notification(queue_arn: str) -> dict[str, Any]:
    """The raw bucket's notification configuration (storage.tf's `aws_s3_bucket_notification`)."""
    return {
        "QueueConfigurations": [
            {"Id": NOTIFICATION_ID, "QueueArn": queue_arn, "Events": list(NOTIFICATION_EVENTS)}
        ]
    }


def provision(
    endpoint_url: str | None,
    region: str,
    bucket: str,
    queue_name: str = QUEUE_NAME,
    max_receive_count: int = MAX_RECEIVE_COUNT,
    visibility_timeout: int = VISIBILITY_TIMEOUT_SECONDS,
) -> Provisioned:
    """Create (or converge) the raw bucket (versioned), the queue, its DLQ `<queue>-dlq`, the queue
    policy and the bucket's notification; then delete the `s3:TestEvent` the notification sends.

    Idempotent. Raises botocore's ClientError/BotoCoreError when the endpoint refuses.
    """
    s3, sqs = aws_clients(endpoint_url, region)
    _create_bucket(s3, bucket, region)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    dlq_url = sqs.create_queue(QueueName=f"{queue_name}-dlq")["QueueUrl"]
    sqs.set_queue_attributes(
        QueueUrl=dlq_url, Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}
    )
    dlq_arn = _queue_arn(sqs, dlq_url)

    # create, then set: create_queue with attributes differing from an existing queue's is an error
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    queue_arn = _queue_arn(sqs, queue_url)
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    sqs.set_queue_attributes(
        QueueUrl=queue_url,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "ReceiveMessageWaitTimeSeconds": str(RECEIVE_WAIT_SECONDS),
            "MessageRetentionPeriod": str(QUEUE_RETENTION_SECONDS),
            "RedrivePolicy": json.dumps(redrive),
            "Policy": json.dumps(queue_policy(queue_arn, bucket)),
        },
    )
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=notification(queue_arn))
    drain_test_events(sqs, queue_url)
    return Provisioned(
        queue_url=queue_url, dlq_url=dlq_url, queue_arn=queue_arn, dlq_arn=dlq_arn, bucket=bucket
    )


def drain_test_events(sqs: Any, queue_url: str, timeout: float = 3.0) -> bool:
    """Delete the `s3:TestEvent` that configuring the notification sends, so consumers never see it.

    Other messages met on the way are made visible again at once (that counts as one receive).
    Returns whether a test event was found; moto sends it synchronously, AWS within seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = False
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for msg in resp.get("Messages", []):
            if is_test_event(msg["Body"]):
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
                found = True
            else:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"], VisibilityTimeout=0
                )
        if found:
            return True
    return False


def is_test_event(body: str) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("Event") == "s3:TestEvent"


def _create_bucket(s3: Any, bucket: str, region: str) -> None:
    args: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(**args)


def _queue_arn(sqs: Any, queue_url: str) -> str:
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    return str(attrs["QueueArn"])
