"""Shared fixtures of the description service tests: generated listings and one loaded service."""
from __future__ import annotations

import socket
import threading
import time

import pytest


@pytest.fixture(scope="session")
def generated():
    """Listings of the embedded Avito generator (another seed than the shipped models were trained on), by kind."""
    from mmstack.describe.listings import embedded_listings

    listings = embedded_listings(160, seed=11, lots=0.6, max_photos=3)
    by_kind: dict[str, list] = {}
    for listing in listings:
        if listing.photos:
            by_kind.setdefault(listing.kind, []).append(listing)
    return by_kind


@pytest.fixture(scope="session")
def describer():
    from mmstack.describe.pipeline import Describer, load_settings

    return Describer(load_settings())


@pytest.fixture(scope="session")
def server(describer):
    """The web app on a free local port, in a thread; yields its base URL."""
    import uvicorn

    from mmstack.describe.service import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(describer)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
