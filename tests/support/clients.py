"""httpx clients for the servers the tests start on 127.0.0.1.

A new `httpx.Client` loads the system's certificate bundle into a fresh SSL context: ~45 ms of
CPU, even for plain HTTP. Health waits polling every 50 ms and a client per rollout spent most
of a core on it while the server they waited for was starting. Every client here shares one
context, built once (still the default, verifying one).
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

TLS = ssl.create_default_context()


def client(**kwargs: Any) -> httpx.Client:
    """`httpx.Client(**kwargs)` on the shared SSL context."""
    return httpx.Client(verify=TLS, **kwargs)
