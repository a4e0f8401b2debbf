"""A local S3 + SQS (moto's server as our child process) and the resources the pipeline needs.

`provision` also works against LocalStack or AWS itself (endpoint_url=None): it creates the raw
bucket (versioned), the ingest queue with its dead-letter queue, and the bucket's event notification.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config

from services.dev.ports import free_port
from services.dev.process import child_env, spawn, stop

NOTIFICATION_ID = "hiring-ingest"
DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: failed events wait for a person


class LocalAwsError(RuntimeError):
    """The local S3/SQS server could not be started."""


class MotoServer:
    """moto's S3 + SQS over HTTP on 127.0.0.1; state is in memory and dies with the process."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or 0
        self.log_path = log_path
        self._fixed_port = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> str:
        """Start the server and return its endpoint URL once it answers HTTP."""
        if self._proc is not None and self._proc.poll() is None:
            return self.endpoint_url
        # an unnamed temp file when no log is wanted: it still lets a failure show the output.
        # It stays open while the server runs; stop() closes it.
        self._log = self.log_path.open("ab") if self.log_path else tempfile.TemporaryFile()  # noqa: SIM115
        for _attempt in range(5):
            if not self._fixed_port:
                self.port = free_port(self.host)
            start = self._log.tell()
            argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
            self._proc = spawn(argv, log=self._log, env=child_env(), death_signal=signal.SIGTERM)
            try:
                if self._wait_ready(self._proc, timeout):
                    return self.endpoint_url
            except LocalAwsError:
                self.stop()
                raise
            output = self._output(start)
            self._proc = None
            if "Address already in use" in output and not self._fixed_port:
                continue
            self.stop()
            raise LocalAwsError(f"moto server did not start:\n{output}")
        self.stop()
        raise LocalAwsError("moto server found no free port after 5 attempts")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop(proc, [(signal.SIGTERM, 5.0)])
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        stop(proc, [(signal.SIGTERM, 5.0)])
        raise LocalAwsError(f"moto server did not answer within {timeout:.0f}s:\n{self._output(0)}")

    def _output(self, start: int) -> str:
        assert self._log is not None
        self._log.flush()
        self._log.seek(start)
        text = self._log.read()[-4000:].decode("utf-8", "replace").strip()
        self._log.seek(0, os.SEEK_END)
        return text


@dataclass(frozen=True)
class Provisioned:
    queue_url: str
    dlq_url: str
    queue_arn: str
    dlq_arn: str
    bucket: str


def clients(endpoint_url: str | None, region: str) -> tuple[Any, Any]:
    """boto3 S3 and SQS clients; against a local endpoint, dummy credentials unless some are set."""
    kwargs: dict[str, Any] = {"region_name": region, "endpoint_url": endpoint_url}
    if endpoint_url is not None and not os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(aws_access_key_id="test", aws_secret_access_key="test")
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", config=config, **kwargs), boto3.client("sqs", config=config, **kwargs)


def provision(
    endpoint_url: str | None,
    region: str,
    bucket: str,
    queue_name: str,
    max_receive_count: int = 5,
    visibility_timeout: int = 60,
    *,
    suffix: str | None = None,
) -> Provisioned:
    """Create (or converge) the raw bucket, the queue, its DLQ `<queue>-dlq` and the notification.

    No suffix filter by default: S3 filters are case-sensitive, so `.csv` would silently drop
    `JOBS.CSV`; the consumer decides what to skip and logs it. Idempotent.
    """
    s3, sqs = clients(endpoint_url, region)
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
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "raw-bucket-events",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
            }
        ],
    }
    sqs.set_queue_attributes(
        QueueUrl=queue_url,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
            "Policy": json.dumps(policy),
        },
    )

    notification: dict[str, Any] = {
        "Id": NOTIFICATION_ID,
        "QueueArn": queue_arn,
        "Events": ["s3:ObjectCreated:*"],
    }
    if suffix:
        notification["Filter"] = {"Key": {"FilterRules": [{"Name": "suffix", "Value": suffix}]}}
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [notification]}
    )
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
