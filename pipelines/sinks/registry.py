"""Every kind of sink by name: how to build one from a URL, and which setting lists its URLs.

Each sink module registers its class with :func:`register`; :func:`sink_types`
imports every module of :mod:`pipelines.sinks` first, so a new sink needs no
line anywhere else.

>>> {"alertmanager", "webhook"} <= set(sink_types())
True
>>> sink_types()["alertmanager"].setting
'alertmanager_urls'
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from pipelines.sinks.base import Sink


@dataclass(frozen=True)
class SinkType:
    kind: str
    setting: str  # the Settings field with its URLs, comma-separated
    build: Callable[[str, httpx.AsyncClient], Sink]  # (URL as configured, shared HTTP client) -> sink


_TYPES: dict[str, SinkType] = {}


def register(kind: str, *, setting: str) -> Callable[[type], type]:
    """Class decorator: sinks of ``kind`` are built as ``cls(url, client)`` for each URL in ``setting``."""

    def add(cls: type) -> type:
        if kind in _TYPES and _TYPES[kind].build is not cls:
            raise ValueError(f"two sinks registered as {kind!r}")
        cls.kind = kind
        _TYPES[kind] = SinkType(kind, setting, cls)
        return cls

    return add


def sink_types() -> dict[str, SinkType]:
    """Every registered kind of sink, in registration order (alphabetical by module)."""
    import pipelines.sinks as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return dict(_TYPES)


def parse_urls(urls: Sequence[str] | str, setting: str = "urls") -> list[str]:
    """URLs from a list or a comma-separated string, blanks skipped; :class:`ValueError` names ``setting``.

    >>> parse_urls(" http://am1:9093, ,http://am2:9093/ ")
    ['http://am1:9093', 'http://am2:9093/']
    """
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = []
    for raw in items:
        url = raw.strip()
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{setting}: not an http(s) URL: {url!r}")
        out.append(url)
    return out
