"""The local paths' S3 + SQS resources (services/dev/provisioning.py, used by `hiring dev`, the test
stacks and compose's aws-init) carry Terraform's values; and on a real endpoint they are what they say.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from services.dev import provisioning
from tests.stack import Stack

TF = Path(__file__).resolve().parents[1] / "deploy" / "terraform"


def _tf(name: str) -> str:
    return (TF / name).read_text()


def _variable_default(name: str) -> str:
    block = re.search(r'variable "' + name + r'" \{(.*?)\n\}', _tf("variables.tf"), re.S)
    assert block, name
    found = re.search(r"^\s*default\s*=\s*(\S+)", block.group(1), re.M)
    assert found, name
    return found.group(1)


def _resource(file: str, kind: str, name: str) -> str:
    block = re.search(r'resource "' + kind + '" "' + name + r'" \{(.*?)\n\}', _tf(file), re.S)
    assert block, f"{kind}.{name} in {file}"
    return block.group(1)


def test_queue_values_are_terraforms() -> None:
    assert int(_variable_default("sqs_visibility_timeout_seconds")) == provisioning.VISIBILITY_TIMEOUT_SECONDS
    assert int(_variable_default("sqs_max_receive_count")) == provisioning.MAX_RECEIVE_COUNT
    queue = _resource("queue.tf", "aws_sqs_queue", "ingest")
    assert re.search(rf"receive_wait_time_seconds\s*=\s*{provisioning.RECEIVE_WAIT_SECONDS}\b", queue)
    assert re.search(rf"message_retention_seconds\s*=\s*{provisioning.QUEUE_RETENTION_SECONDS}\b", queue)
    dlq = _resource("queue.tf", "aws_sqs_queue", "ingest_dlq")
    assert re.search(rf"message_retention_seconds\s*=\s*{provisioning.DLQ_RETENTION_SECONDS}\b", dlq)


def test_queue_policy_condition_is_terraforms() -> None:
    tf_policy = _resource("queue.tf", "aws_sqs_queue_policy", "ingest")
    ours = provisioning.queue_policy("arn:aws:sqs:us-east-1:123456789012:q", "raw")
    allow = ours["Statement"][0]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {
        "ArnEquals": {"aws:SourceArn": "arn:aws:s3:::raw"},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }
    assert re.search(r'ArnEquals\s*=\s*\{\s*"aws:SourceArn"\s*=\s*aws_s3_bucket\.raw\.arn\s*\}', tf_policy)
    assert re.search(r'StringEquals\s*=\s*\{\s*"aws:SourceAccount"\s*=\s*local\.account_id\s*\}', tf_policy)
    assert 'Service = "s3.amazonaws.com"' in tf_policy


def test_notification_is_terraforms() -> None:
    tf_notification = _resource("storage.tf", "aws_s3_bucket_notification", "raw")
    events = re.search(r"events\s*=\s*\[(.*?)\]", tf_notification, re.S)
    assert events
    assert tuple(re.findall(r'"([^"]+)"', events.group(1))) == provisioning.NOTIFICATION_EVENTS
    assert "s3:ObjectRemoved:*" in provisioning.NOTIFICATION_EVENTS  # deletes retract (CONTRACT §2)
    # no key filter anywhere: `.csv.gz` and `JOBS.CSV` reach the consumer, which records what it skips
    assert "filter_" not in tf_notification
    config = provisioning.notification("arn:aws:sqs:us-east-1:123456789012:q")["QueueConfigurations"]
    assert len(config) == 1 and "Filter" not in config[0]


def test_provisioned_queue_and_bucket_on_the_endpoint(stack: Stack) -> None:
    """What provision leaves on a real endpoint: every value above, read back over HTTP."""
    own = stack.isolated()
    sqs, s3 = own.sqs(), own.s3()
    attrs = sqs.get_queue_attributes(QueueUrl=own.queue_url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith(own.bucket + "-dlq")
    assert int(json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]) == provisioning.MAX_RECEIVE_COUNT
    assert int(attrs["ReceiveMessageWaitTimeSeconds"]) == provisioning.RECEIVE_WAIT_SECONDS
    policy = json.loads(attrs["Policy"])
    assert policy["Statement"][0]["Condition"]["ArnEquals"] == {"aws:SourceArn": f"arn:aws:s3:::{own.bucket}"}
    assert s3.get_bucket_versioning(Bucket=own.bucket)["Status"] == "Enabled"
    configs = s3.get_bucket_notification_configuration(Bucket=own.bucket)["QueueConfigurations"]
    assert [sorted(c["Events"]) for c in configs] == [sorted(provisioning.NOTIFICATION_EVENTS)]

    # a .csv.gz key and a delete both reach the queue. moto (5.2) sends ObjectRemoved only when a
    # key's last version is deleted, never for a delete marker (S3 sends ObjectRemoved:DeleteMarkerCreated)
    put = s3.put_object(Bucket=own.bucket, Key="jobs/2021.csv.gz", Body=b"\x1f\x8b")
    s3.delete_object(Bucket=own.bucket, Key="jobs/2021.csv.gz", VersionId=put["VersionId"])
    names: list[str] = []
    for _ in range(10):
        got = sqs.receive_message(QueueUrl=own.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for msg in got.get("Messages", []):
            names += [r["eventName"] for r in json.loads(msg["Body"]).get("Records", [])]
            sqs.delete_message(QueueUrl=own.queue_url, ReceiptHandle=msg["ReceiptHandle"])
        if len(names) >= 2:
            break
    assert any(n.startswith("ObjectCreated:") for n in names), names
    assert any(n.startswith("ObjectRemoved:") for n in names), names
