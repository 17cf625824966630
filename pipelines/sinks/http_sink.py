"""What the HTTP sinks share: one POST of a JSON body, its outcome as success or :class:`DeliveryError`.

>>> redact("https://user:secret@hooks.example/x?y=1")
'https://hooks.example/x?y=1'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from detector.output.notify import encode, retryable_status
from pipelines.sinks.base import DeliveryError

HEADERS = {"Content-Type": "application/json", "User-Agent": "Headroom"}


class HttpSink:
    """A sink that POSTs each batch as JSON to one URL; subclasses say what the body is.

    2xx is delivered; 5xx, 408 and 429 and network errors are worth a retry;
    any other status means the payload was refused (:func:`retryable_status`).
    """

    kind: ClassVar[str]

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self.name = redact(url)
        self.client = client

    def payload(self, batch: Sequence[Mapping[str, Any]]) -> Any:
        raise NotImplementedError

    async def send(self, batch: Sequence[Mapping[str, Any]]) -> None:
        try:
            response = await self.client.post(self.url, content=encode(self.payload(batch)), headers=HEADERS)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retry=True) from None
        except (httpx.InvalidURL, ValueError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retry=False) from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"HTTP {response.status_code}: {response.text[:300].strip()}",
                                retry=retryable_status(response.status_code))


def redact(url: str) -> str:
    """The URL without user info (it may hold a password), for logs and metric labels."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
