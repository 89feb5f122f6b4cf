"""Whether the Hugging Face hub (or another download host) is worth asking: the one rule for every part.

Offline, `datasets` and `transformers` retry for half a minute or more before
giving up; a plain TCP connect answers in milliseconds, so every hub call asks
this first and falls back at once when the hub cannot be reached. The rule:
HF_HUB_OFFLINE / HF_DATASETS_OFFLINE mean no; behind a proxy (HTTPS_PROXY,
ALL_PROXY) only the proxy knows, so the libraries try; otherwise a TCP connect
to HF_ENDPOINT (default https://huggingface.co) decides.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """The user asked for no hub access (the standard Hugging Face switches, read at call time)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_host() -> str:
    """The hub's host name, for messages."""
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    if hub_offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return host_reachable(url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80),
                          timeout)


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Worth a download from host:port: behind a proxy only the proxy knows (so yes), else a TCP connect says."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    return _can_connect(host, port, timeout)


@functools.lru_cache(maxsize=8)
def _can_connect(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
