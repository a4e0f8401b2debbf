"""aiobotocore client factory: one session per composition root, clients opened as async contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError
from opentelemetry import trace

from shared.config import AwsSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient


class AwsClients:
    """Builds S3 and SQS clients for one service; the caller enters and closes them.

    With a `tracer`, each client is wrapped in a `TracedClient`: every API call is a CLIENT span."""

    def __init__(
        self, settings: AwsSettings, session: AioSession | None = None, *, tracer: trace.Tracer | None = None
    ) -> None:
        self._settings = settings
        self._session = session or get_session()
        self._tracer = tracer

    def client(self, service: str, **config: Any) -> AbstractAsyncContextManager[Any]:
        cfg = AioConfig(
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=config.pop("max_pool_connections", 20),
            s3={"addressing_style": "path"} if service == "s3" else None,
            **config,
        )
        # the stubs type create_client per literal service name; the name is a parameter here
        session = cast(Any, self._session)
        created: AbstractAsyncContextManager[Any] = session.create_client(
            service, region_name=self._settings.region, endpoint_url=self._settings.endpoint_url, config=cfg
        )
        if self._tracer is None:
            return created
        return _traced(created, self._tracer, self._settings.region)

    def s3(self, **config: Any) -> AbstractAsyncContextManager[S3Client]:
        """An S3 client (a TracedClient with the same methods when tracing)."""
        return self.client("s3", **config)

    def sqs(self, **config: Any) -> AbstractAsyncContextManager[SQSClient]:
        """An SQS client (a TracedClient with the same methods when tracing)."""
        return self.client("sqs", **config)


# ---- tracing ------------------------------------------------------------------------------------
# opentelemetry-instrumentation-botocore has an AiobotocoreInstrumentor, but it patches
# aiobotocore's client class for the whole process (one tracer provider per process), records the
# queue URL and the pre-1.26 messaging attributes (messaging.system "aws.sqs"). This wrapper keeps the
# tracer the composition root hands over and follows the AWS SDK (rpc.*, aws.s3.*) and messaging
# (messaging.system "aws_sqs") semantic conventions. Only named, non-secret parameters are recorded
# (bucket, key, upload id, queue name); bodies, receipt handles and metadata never are.

_SQS_OPERATION_TYPES: Final = {
    "ReceiveMessage": "receive",
    "DeleteMessage": "settle",
    "DeleteMessageBatch": "settle",
    "SendMessage": "send",
    "SendMessageBatch": "send",
}


@asynccontextmanager
async def _traced(
    created: AbstractAsyncContextManager[Any], tracer: trace.Tracer, region: str
) -> AsyncIterator[Any]:
    async with created as client:
        yield TracedClient(client, tracer, region)


class TracedClient:
    """An aiobotocore client whose API methods each run in a span; anything else passes through."""

    def __init__(self, client: Any, tracer: trace.Tracer, region: str) -> None:
        self._client = client
        self._tracer = tracer
        self._service = str(client.meta.service_model.service_id)
        self._operations: dict[str, str] = dict(client.meta.method_to_api_mapping)
        self._base: dict[str, str] = {
            "rpc.system": "aws-api",
            "rpc.service": self._service,
            "cloud.region": region,
        }

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._client, name)
        operation = self._operations.get(name)
        if operation is None or not callable(found):
            return found
        return self._wrap(operation, found)

    def _wrap(self, operation: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(**params: Any) -> Any:
            with self._tracer.start_as_current_span(
                f"{self._service}.{operation}",
                kind=trace.SpanKind.CLIENT,
                attributes=self._attributes(operation, params),
            ) as span:
                try:
                    result = await method(**params)
                except ClientError as exc:
                    meta = exc.response.get("ResponseMetadata", {})
                    if "HTTPStatusCode" in meta:
                        span.set_attribute("http.response.status_code", int(meta["HTTPStatusCode"]))
                    span.set_attribute("error.type", str(exc.response.get("Error", {}).get("Code", "")))
                    raise
                self._response(span, operation, result)
                return result

        return call

    def _attributes(self, operation: str, params: dict[str, Any]) -> dict[str, str | int]:
        attributes: dict[str, str | int] = {**self._base, "rpc.method": operation}
        if self._service == "S3":
            for param, attribute in (
                ("Bucket", "aws.s3.bucket"),
                ("Key", "aws.s3.key"),
                ("UploadId", "aws.s3.upload_id"),
                ("PartNumber", "aws.s3.part_number"),
            ):
                if params.get(param) is not None:
                    attributes[attribute] = params[param]
        elif self._service == "SQS":
            attributes["messaging.system"] = "aws_sqs"
            attributes["messaging.operation.name"] = operation
            if operation in _SQS_OPERATION_TYPES:
                attributes["messaging.operation.type"] = _SQS_OPERATION_TYPES[operation]
            queue_url = params.get("QueueUrl")
            if isinstance(queue_url, str):
                attributes["messaging.destination.name"] = queue_url.rstrip("/").rsplit("/", 1)[-1]
        return attributes

    def _response(self, span: trace.Span, operation: str, result: Any) -> None:
        if not isinstance(result, dict):
            return
        meta = result.get("ResponseMetadata", {})
        if "HTTPStatusCode" in meta:
            span.set_attribute("http.response.status_code", int(meta["HTTPStatusCode"]))
        if meta.get("RequestId"):
            span.set_attribute("aws.request_id", str(meta["RequestId"]))
        if operation == "ReceiveMessage":
            messages = result.get("Messages", [])
            span.set_attribute("messaging.batch.message_count", len(messages))
            if len(messages) == 1 and messages[0].get("MessageId"):
                span.set_attribute("messaging.message.id", str(messages[0]["MessageId"]))
