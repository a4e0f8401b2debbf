"""aiobotocore client factory: one session per composition root, clients opened as async contexts."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from shared.config import AwsSettings


class AwsClients:
    """Builds S3 and SQS clients for one service; the caller enters and closes them."""

    def __init__(self, settings: AwsSettings, session: AioSession | None = None) -> None:
        self._settings = settings
        self._session = session or get_session()

    def client(self, service: str, **config: Any) -> AbstractAsyncContextManager[Any]:
        cfg = AioConfig(
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=config.pop("max_pool_connections", 20),
            s3={"addressing_style": "path"} if service == "s3" else None,
            **config,
        )
        return self._session.create_client(  # type: ignore[no-any-return]
            service, region_name=self._settings.region, endpoint_url=self._settings.endpoint_url, config=cfg
        )

    def s3(self, **config: Any) -> AbstractAsyncContextManager[Any]:
        return self.client("s3", **config)

    def sqs(self, **config: Any) -> AbstractAsyncContextManager[Any]:
        return self.client("sqs", **config)
