"""Settings from the environment: every bad variable stops the service with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.config import ConfigError, load_settings, parse_endpoint

GOOD = {"RDS_ENDPOINT": "db.example:5433", "SQS_QUEUE_URL": "http://127.0.0.1:1/123/q"}


def test_defaults_and_endpoint_forms() -> None:
    s = load_settings(GOOD, service_name="x")
    assert (s.bucket, s.db.host, s.db.port, s.db.database, s.aws.region) == (
        "globant-raw-data",
        "db.example",
        5433,
        "postgres",
        "us-east-1",
    )
    assert parse_endpoint("db") == ("db", 5432)
    assert parse_endpoint("[::1]:6543") == ("::1", 6543)
    assert parse_endpoint("/var/run/postgresql") == ("/var/run/postgresql", 5432)
    assert "secret" not in repr(load_settings({**GOOD, "RDS_PASSWORD": "secret"}, service_name="x"))


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "RDS_ENDPOINT"),
        ({**GOOD, "RDS_ENDPOINT": "db:notaport"}, "RDS_ENDPOINT"),
        ({**GOOD, "RDS_ENDPOINT": "db:70000"}, "RDS_ENDPOINT"),
        ({**GOOD, "S3_RAW_BUCKET": "Bad_Bucket"}, "S3_RAW_BUCKET"),
        ({**GOOD, "SQS_QUEUE_URL": "queue"}, "SQS_QUEUE_URL"),
        ({**GOOD, "AWS_ENDPOINT_URL": "localhost:4566"}, "AWS_ENDPOINT_URL"),
        ({**GOOD, "AWS_REGION": "mars"}, "AWS_REGION"),
        ({**GOOD, "OTEL_EXPORTER_OTLP_ENDPOINT": "collector"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env, service_name="x", require_queue=True)
    assert names in str(info.value) and "\n" not in str(info.value)


def test_consumer_needs_the_queue() -> None:
    with pytest.raises(ConfigError, match="SQS_QUEUE_URL"):
        load_settings({"RDS_ENDPOINT": "db"}, service_name="x", require_queue=True)


@pytest.mark.parametrize("command", ["ingest", "query", "migrate"])
def test_the_command_stops_at_start_with_one_clear_line(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RDS_", "SQS_", "S3_", "AWS_"))}
    env["RDS_ENDPOINT"] = "db:port"
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RDS_ENDPOINT" in lines[0], done.stderr


def test_a_bad_consumer_knob_is_named() -> None:
    from services.ingest.app import load_options

    with pytest.raises(ConfigError, match="INGEST_CONCURRENCY"):
        load_options({"INGEST_CONCURRENCY": "lots"})
