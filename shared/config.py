"""Settings from the environment (CONTRACT §3), validated once at start.

A missing or malformed variable raises ConfigError whose message is one line naming it; the
`hiring` command prints that line and exits non-zero.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec

DEFAULT_BUCKET = "globant-raw-data"


class ConfigError(Exception):
    """A setting is missing or malformed; str() is one line that names the variable."""


class DatabaseSettings(msgspec.Struct, frozen=True):
    host: str  # a host name, an IP address, or a unix-socket directory (starts with '/')
    port: int
    database: str
    user: str
    password: str = msgspec.field(default="")
    # RDS_PASSWORD_SECRET_ARN: a Secrets Manager secret holding the current password (RDS's managed
    # master secret, JSON with "password", or a plain string). When set, every new connection reads it,
    # so a rotation is followed; `password` stays the fallback. The secret is read in `secret_region`
    # through `secret_endpoint_url` (AWS_REGION, AWS_ENDPOINT_URL).
    password_secret: str = ""
    secret_region: str = "us-east-1"
    secret_endpoint_url: str | None = None
    start_timeout: float = 60.0  # seconds a service retries an unreachable database at start

    def __repr__(self) -> str:  # never print the password
        return f"DatabaseSettings(host={self.host!r}, port={self.port}, database={self.database!r})"

    def dsn_summary(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


class AwsSettings(msgspec.Struct, frozen=True):
    region: str
    endpoint_url: str | None = None  # a local S3/SQS (moto, LocalStack); None means AWS itself


class TelemetrySettings(msgspec.Struct, frozen=True):
    service_name: str
    otlp_endpoint: str | None = None
    environment: str = "local"


class Settings(msgspec.Struct, frozen=True):
    bucket: str
    queue_url: str | None
    db: DatabaseSettings
    aws: AwsSettings
    telemetry: TelemetrySettings
    execution_env: str | None = None


_PORT_RE = re.compile(r"^\d{1,5}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def parse_endpoint(value: str, var: str = "RDS_ENDPOINT") -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port`, a bare IPv6 address, or a unix-socket directory."""
    value = value.strip()
    if not value:
        raise ConfigError(f"{var} is empty: set it to host, host:port or a unix-socket directory")
    if value.startswith("/"):
        return value, 5432
    host, port = value, "5432"
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ConfigError(f"{var}={value!r} is malformed: unclosed '['")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"{var}={value!r} is malformed: expected ':port' after ']'")
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    if not host or not _PORT_RE.match(port) or not 0 < int(port) < 65536:
        raise ConfigError(f"{var}={value!r} is malformed: expected host or host:port (port 1-65535)")
    return host, int(port)


def _url(env: Mapping[str, str], var: str) -> str | None:
    value = env.get(var, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{var}={value!r} is malformed: expected an http(s) URL")
    return value


def load_settings(env: Mapping[str, str], *, service_name: str, require_queue: bool = False) -> Settings:
    """Read CONTRACT §3's variables from `env`; raise ConfigError naming the first bad one."""
    bucket = env.get("S3_RAW_BUCKET", DEFAULT_BUCKET).strip()
    if not _BUCKET_RE.match(bucket):
        raise ConfigError(f"S3_RAW_BUCKET={bucket!r} is not a valid S3 bucket name")
    if "RDS_ENDPOINT" not in env:
        raise ConfigError("RDS_ENDPOINT is not set: the PostgreSQL host, host:port or socket directory")
    host, port = parse_endpoint(env["RDS_ENDPOINT"])
    db = DatabaseSettings(
        host=host,
        port=port,
        database=env.get("RDS_DB_NAME", "postgres").strip() or "postgres",
        user=env.get("RDS_USERNAME", "postgres").strip() or "postgres",
        password=env.get("RDS_PASSWORD", ""),
        start_timeout=float(int_setting(env, "HIRING_DB_START_TIMEOUT", 60, low=0, high=3600)),
    )
    queue_url = _url(env, "SQS_QUEUE_URL")
    if require_queue and queue_url is None:
        raise ConfigError("SQS_QUEUE_URL is not set: the ingest consumer needs the queue's URL")
    region = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1").strip()
    if not re.match(r"^[a-z]{2}(-[a-z]+)+-\d$", region):
        raise ConfigError(f"AWS_REGION={region!r} is not an AWS region name (like us-east-1)")
    aws = AwsSettings(region=region, endpoint_url=_url(env, "AWS_ENDPOINT_URL"))
    secret = env.get("RDS_PASSWORD_SECRET_ARN", "").strip()
    if secret and not secret.startswith("arn:"):
        raise ConfigError(f"RDS_PASSWORD_SECRET_ARN={secret!r} is not an ARN (arn:aws:secretsmanager:...)")
    if secret:
        db = msgspec.structs.replace(
            db, password_secret=secret, secret_region=region, secret_endpoint_url=aws.endpoint_url
        )
    otlp = _url(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    telemetry = TelemetrySettings(
        service_name=env.get("OTEL_SERVICE_NAME", "").strip() or service_name,
        otlp_endpoint=otlp,
        environment=env.get("DEPLOY_ENV", "").strip() or ("aws" if env.get("AWS_EXECUTION_ENV") else "local"),
    )
    return Settings(
        bucket=bucket,
        queue_url=queue_url,
        db=db,
        aws=aws,
        telemetry=telemetry,
        execution_env=env.get("AWS_EXECUTION_ENV") or None,
    )


def int_setting(
    env: Mapping[str, str], var: str, default: int, *, low: int = 1, high: int = 1_000_000
) -> int:
    """A service-specific integer knob (e.g. INGEST_CONCURRENCY)."""
    raw = env.get(var, "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"\d+", raw) or not low <= int(raw) <= high:
        raise ConfigError(f"{var}={raw!r} is malformed: expected an integer from {low} to {high}")
    return int(raw)
