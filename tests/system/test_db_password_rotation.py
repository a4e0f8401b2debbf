"""RDS rotates its managed master password under running tasks: with RDS_PASSWORD_SECRET_ARN the
pool reads the secret for every new connection and keeps working; with the password read once at
start it breaks. Checked on the real PostgreSQL (scram-sha-256) and moto's Secrets Manager."""

from __future__ import annotations

import json
import uuid

import asyncpg
import boto3
import pytest

from shared.config import ConfigError, load_settings
from shared.db import connect, create_pool
from tests.system.stack import Stack


async def test_a_pool_follows_a_rotated_password(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # the services find AWS credentials in their environment (ECS: the task role)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    role, old, new = f"rot_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex, uuid.uuid4().hex
    sm = boto3.client(
        "secretsmanager",
        region_name=stack.region,
        endpoint_url=stack.endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    arn = sm.create_secret(Name=f"rds!{role}", SecretString=json.dumps({"username": role, "password": old}))[
        "ARN"
    ]
    admin = await stack.connect()
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{old}'")
    env = {**stack.env, "RDS_USERNAME": role, "RDS_PASSWORD": old}
    following = load_settings({**env, "RDS_PASSWORD_SECRET_ARN": arn}, service_name="t").db
    fixed = load_settings(env, service_name="t").db
    pools = [
        await create_pool(following, min_size=1, max_size=2),
        await create_pool(fixed, min_size=1, max_size=2),
    ]
    try:
        for pool in pools:
            assert await pool.fetchval("SELECT current_user") == role

        # the rotation: RDS sets the new password, then the secret's new version
        await admin.execute(f"ALTER ROLE {role} PASSWORD '{new}'")
        sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": role, "password": new}))
        for pool in pools:
            await pool.expire_connections()  # as the idle timeout does within minutes

        assert await pools[0].fetchval("SELECT current_user") == role
        with pytest.raises(asyncpg.InvalidPasswordError):
            await pools[1].fetchval("SELECT 1")
        conn = await connect(following)
        await conn.close()
    finally:
        for pool in pools:
            pool.terminate()
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def test_a_malformed_secret_arn_is_a_config_error(stack: Stack) -> None:
    with pytest.raises(ConfigError, match="RDS_PASSWORD_SECRET_ARN"):
        load_settings({**stack.env, "RDS_PASSWORD_SECRET_ARN": "hiring/db"}, service_name="t")
