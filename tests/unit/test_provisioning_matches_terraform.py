"""The local paths' S3 + SQS resources (services/dev/provisioning.py, used by `hiring dev`, the test
stacks and compose's aws-init) carry Terraform's values: read from the .tf files, no server.
"""

from __future__ import annotations

import re
from pathlib import Path

from services.dev import provisioning

TF = Path(__file__).resolve().parents[2] / "deploy" / "terraform"


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
