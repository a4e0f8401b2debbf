"""`hiring dlq list` and `hiring dlq redrive [--all | ID]`: the dead-letter queue, explained.

A message reaches the DLQ after the ingest queue's maxReceiveCount receives that did not delete it:
a body no consumer could decode, or a file whose processing kept failing. `list` shows each message
with why, from the event log (`ingest_events`, by SQS message id: what the consumers did with it)
and the ledger (`ingest_objects`: the object version's status, attempts and error).

`redrive` sends messages back to the ingest queue and deletes them from the DLQ, except that a
message whose object versions are all loaded (or retracted) by now is only deleted: the file loaded
meanwhile, so there is nothing to do (redriving would be harmless too: each version is applied
once). Undecodable messages would only fail again: `--all` leaves them, naming one by ID sends it.

The DLQ's URL: $HIRING_DLQ_URL when set, else the ingest queue's RedrivePolicy (SQS_QUEUE_URL).
Messages are read without being consumed: each is received, then made visible again at once.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from rich.console import Console
from rich.table import Table

from services.ingest.events import ObjectEvent, TestEvent, Undecodable, decode_message
from shared import db
from shared.aws import AwsClients
from shared.config import ConfigError, Settings, load_settings

DLQ_VAR: Final = "HIRING_DLQ_URL"
DONE: Final = frozenset({"loaded", "retracted"})
MAX_MESSAGES: Final = 10_000

_EVENTS = """
SELECT outcome, detail, received_at FROM ingest_events
WHERE message_id = $1
ORDER BY id DESC
LIMIT 1
"""

_LEDGER = """
SELECT id, status, attempts, error, rows_loaded, rows_rejected FROM ingest_objects
WHERE bucket = $1 AND key = $2
  AND ($3::text IS NULL OR version = $3 OR etag = $4)
ORDER BY id DESC
LIMIT 1
"""


@dataclass
class Dead:
    """One DLQ message and what the event log and the ledger say of it."""

    message_id: str
    receipt: str
    body: str
    receives: int
    sent_at: str
    objects: list[str] = field(default_factory=list)  # "bucket/key" of each event it carries
    statuses: list[str | None] = field(default_factory=list)  # ledger status per object (None: none)
    why: str = ""
    decodable: bool = True

    @property
    def done(self) -> bool:
        """Every object it names is loaded or retracted by now: nothing left to do."""
        return self.decodable and bool(self.statuses) and all(s in DONE for s in self.statuses)


async def dlq_url(sqs: Any, env: Mapping[str, str], settings: Settings) -> str:
    if url := env.get(DLQ_VAR, "").strip():
        return url
    if settings.queue_url is None:
        raise ConfigError(f"set {DLQ_VAR}, or SQS_QUEUE_URL (its RedrivePolicy names the DLQ)")
    attrs = await sqs.get_queue_attributes(QueueUrl=settings.queue_url, AttributeNames=["RedrivePolicy"])
    policy = attrs.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        raise ConfigError(f"SQS_QUEUE_URL has no RedrivePolicy: set {DLQ_VAR}")
    arn = json.loads(policy)["deadLetterTargetArn"]  # arn:aws:sqs:region:account:name
    _, _, _, _, account, name = arn.split(":", 5)
    found = await sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
    return str(found["QueueUrl"])


async def peek(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message in the queue, left there: received (hidden while we look), then released."""
    seen: dict[str, dict[str, Any]] = {}
    try:
        while len(seen) < MAX_MESSAGES:
            got = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                VisibilityTimeout=60,
                AttributeNames=["All"],
            )
            batch = got.get("Messages", [])
            if not batch:
                break
            for message in batch:
                seen[message["MessageId"]] = message
    finally:
        for message in seen.values():
            await sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    return list(seen.values())


async def explain(pool: asyncpg.Pool, message: dict[str, Any]) -> Dead:
    attrs = message.get("Attributes", {})
    dead = Dead(
        message_id=message["MessageId"],
        receipt=message["ReceiptHandle"],
        body=message.get("Body", ""),
        receives=int(attrs.get("ApproximateReceiveCount", "0")),
        sent_at=_time(attrs.get("SentTimestamp")),
    )
    reasons: list[str] = []
    event_row = await pool.fetchrow(_EVENTS, dead.message_id)
    if event_row is not None:
        detail = f": {event_row['detail']}" if event_row["detail"] else ""
        reasons.append(
            f"last handled {event_row['received_at']:%Y-%m-%d %H:%M:%S}: {event_row['outcome']}{detail}"
        )
    decoded = decode_message(dead.body)
    if isinstance(decoded, Undecodable):
        dead.decodable = False
        reasons.append(f"undecodable: {decoded.reason}")
    elif isinstance(decoded, TestEvent):
        dead.decodable = False
        reasons.append("an S3 test event (nothing to ingest)")
    else:
        for event in decoded:
            reasons.append(await _object_reason(pool, dead, event))
    if event_row is None and dead.decodable and not dead.done:
        reasons.append("no consumer recorded handling it: see the ingest logs for this message id")
    dead.why = "; ".join(reasons)
    return dead


async def _object_reason(pool: asyncpg.Pool, dead: Dead, event: ObjectEvent) -> str:
    dead.objects.append(f"{event.bucket}/{event.key}")
    row = await pool.fetchrow(_LEDGER, event.bucket, event.key, event.version_id, event.etag)
    if row is None:
        dead.statuses.append(None)
        return f"{event.key}: never applied (no ledger row)"
    dead.statuses.append(row["status"])
    if row["status"] in DONE:
        return f"{event.key}: {row['status']} since ({row['rows_loaded']} rows): safe to drop"
    error = f", error: {row['error']}" if row["error"] else ""
    return f"{event.key}: {row['status']} after {row['attempts']} attempts{error}"


def _time(millis: str | None) -> str:
    if not millis:
        return ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(millis) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(dead: Sequence[Dead]) -> Table:
    table = Table(title="dead-letter queue", title_justify="left")
    for column in ("message id", "sent (UTC)", "receives", "objects"):
        table.add_column(column, no_wrap=True)
    for d in dead:
        table.add_row(d.message_id, d.sent_at, str(d.receives), "\n".join(d.objects))
    return table


def _why(dead: Sequence[Dead]) -> list[str]:
    """`<message id>: why`, one line each (never wrapped into a cell: easy to grep and copy)."""
    return [f"{d.message_id}: {d.why}" for d in dead]


async def run_dlq(
    action: str, ids: Sequence[str], all_: bool, env: Mapping[str, str], console: Console
) -> int:
    """`list` or `redrive`; 0 when done, 2 when a named message is not in the DLQ."""
    settings = load_settings(env, service_name="hiring-dlq")
    pool = await db.create_pool(settings.db, min_size=1, max_size=2)
    try:
        async with AwsClients(settings.aws).sqs() as sqs:
            url = await dlq_url(sqs, env, settings)
            dead = [await explain(pool, m) for m in await peek(sqs, url)]
            if action == "list":
                console.print(_table(dead))
                for line in _why(dead):
                    console.print(line, highlight=False, markup=False, soft_wrap=True)
                console.print(f"{len(dead)} message(s) in {url}", highlight=False, soft_wrap=True)
                return 0
            return await _redrive(sqs, url, settings, dead, ids, all_, console)
    finally:
        await pool.close()


async def _redrive(
    sqs: Any, url: str, settings: Settings, dead: list[Dead], ids: Sequence[str], all_: bool, console: Console
) -> int:
    if settings.queue_url is None:
        raise ConfigError("SQS_QUEUE_URL is needed to redrive (the ingest queue)")
    by_id = {d.message_id: d for d in dead}
    missing = [i for i in ids if i not in by_id]
    chosen = [d for d in dead if d.decodable] if all_ else [by_id[i] for i in ids if i in by_id]
    for d in chosen:
        # a fresh receipt: peek released the messages, so receive the chosen one again
        receipt = await _claim(sqs, url, d.message_id)
        if receipt is None:
            console.print(f"{d.message_id}: gone from the DLQ meanwhile")
            continue
        if d.done:
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt)
            console.print(f"{d.message_id}: dropped, its file loaded meanwhile ({', '.join(d.objects)})")
            continue
        await sqs.send_message(QueueUrl=settings.queue_url, MessageBody=d.body)
        await sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt)
        console.print(
            f"{d.message_id}: sent back to the ingest queue ({', '.join(d.objects) or 'no object'})"
        )
    if all_:
        for d in dead:
            if not d.decodable:
                console.print(f"{d.message_id}: left in the DLQ ({d.why}); name it to send it anyway")
    for i in missing:
        console.print(f"{i}: no such message in the DLQ")
    return 2 if missing else 0


async def _claim(sqs: Any, url: str, message_id: str, rounds: int = 20) -> str | None:
    """Receive until `message_id` comes up; release every other message seen at once."""
    for _ in range(rounds):
        got = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60
        )
        batch = got.get("Messages", [])
        found: str | None = None
        for message in batch:
            if message["MessageId"] == message_id:
                found = message["ReceiptHandle"]
            else:
                await sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
        if found is not None:
            return found
        if not batch:
            return None
    return None


def main_dlq(action: str, ids: Sequence[str], all_: bool) -> int:
    return asyncio.run(run_dlq(action, ids, all_, os.environ, Console(soft_wrap=True)))
