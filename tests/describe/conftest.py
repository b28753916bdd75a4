"""Shared fixtures of the description service tests: generated listings and one loaded service."""
from __future__ import annotations

import re
import socket
import threading
import time

import pytest


@pytest.fixture(scope="session")
def generated():
    """Listings of the embedded Avito generator, by kind: the world the shipped models were trained in (seed 0),
    another draw of listings (stream 11)."""
    from mmstack.describe.listings import embedded_listings

    listings = embedded_listings(160, seed=0, stream=11, lots=0.6, max_photos=3)
    by_kind: dict[str, list] = {}
    for listing in listings:
        if listing.photos:
            by_kind.setdefault(listing.kind, []).append(listing)
    return by_kind


@pytest.fixture(scope="session")
def describer(tmp_path_factory):
    """The service with the shipped models and thresholds, except the minors classifier's: the generated photos
    (flat shapes on a coloured background) are outside its domain, and at its recall-tuned threshold (configs/moderation_images.toml, with
    the face check) it withholds about a fifth of them. The seed cases test the description path, so here it
    flags only at 0.7; test_minors_verdict_rejects checks that its flag rejects a listing."""
    from mmstack.describe.pipeline import IMAGES_CONFIG, Describer, load_settings

    config = tmp_path_factory.mktemp("describe") / "moderation_images.toml"
    text = IMAGES_CONFIG.read_text(encoding="utf-8")
    config.write_text(re.sub(r"(?m)^minor_threshold\s*=.*$", "minor_threshold = 0.7", text), encoding="utf-8")
    return Describer(load_settings(images_config=str(config)))


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
