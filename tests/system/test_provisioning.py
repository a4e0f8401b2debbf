"""On a real endpoint, provision leaves what it says (the values themselves are pinned against
Terraform's in tests/unit/test_provisioning_matches_terraform.py).
"""

from __future__ import annotations

import json

from services.dev import provisioning
from tests.system.stack import Stack


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
