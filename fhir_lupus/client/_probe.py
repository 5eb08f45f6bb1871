"""One quick GET that says whether a server is up yet: for starting servers (devserver), never for data."""

from __future__ import annotations

import httpx

__all__ = ["serves"]


def serves(url: str, *, timeout: float = 5.0) -> bool:
    """True when ``url`` answers 200 to a single GET (no retries: the caller polls until it does)."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False
