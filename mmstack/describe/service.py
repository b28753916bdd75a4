"""The web app: ``POST /describe`` (multipart: ``attributes`` JSON text and up to 10 ``photos``) and a small page.

    mmstack serve [--host 127.0.0.1] [--port 8000] [--config configs/describe.toml]

A request body over ``server.max_request_mb`` is refused with 413 as soon as its declared length (or, for a
chunked body, the bytes read so far) passes the limit; the multipart parser spools uploads over 1 MB to
temporary files, and photos are read and decoded one at a time (at most 25 MB each, decoded at reduced scale),
so 10 photos of 25 MB cost disk, not memory. Validation problems are a 422 naming each field or file.
"""
# no "from __future__ import annotations": FastAPI reads the endpoint annotations (Request) at definition time

import json
import logging
import time
from pathlib import Path

from ..errors import ConfigError
from .validate import (
    MAX_PHOTO_BYTES,
    MAX_PHOTOS,
    Problem,
    ValidationError,
    validate_listing,
)

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (by Content-Length before reading, else by
    counting the bytes as they arrive)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, int(declared))
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(seen)
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge as exc:
            if not started:
                await self._refuse(send, exc.seen)

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps({"error": f"request body of {size / 2**20:.0f}+ MB is over the "
                                    f"{self.max_bytes / 2**20:.0f} MB limit ({MAX_PHOTOS} photos of at most "
                                    f"{MAX_PHOTO_BYTES // 2**20} MB each)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    def __init__(self, seen: int):
        self.seen = seen


def problems_response(problems: list[Problem], status: int = 422):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": "; ".join(map(str, problems)),
                         "problems": [{"field": p.field, "message": p.message} for p in problems]}, status_code=status)


def _need_serve_extra() -> None:
    """The web stack is the optional extra ``serve`` (``./run.sh`` installs it): say so in one line."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the description service needs the 'serve' extra ({exc.name} is missing): "
                          "pip install -e '.[serve]' (./run.sh installs it)") from None


def create_app(describer=None, settings=None):
    """The FastAPI app around a :class:`mmstack.describe.pipeline.Describer` (loaded here when not given)."""
    _need_serve_extra()
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile

    from .pipeline import Describer, load_settings

    if describer is None:
        describer = Describer(settings or load_settings())
    settings = describer.settings
    app = FastAPI(title="mmstack listing description", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.describer = describer

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "captioner": describer.captioner.name}

    @app.post("/describe")
    async def describe(request: Request):
        try:
            # files beyond the limit are not even spooled: max_files counts every part carrying a file
            form = await request.form(max_files=MAX_PHOTOS + 1, max_fields=10)
        except Exception as exc:  # multipart errors (too many files, malformed body): a client error
            detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
            if "Too many files" in str(detail):
                return problems_response([Problem("photos", f"more than {MAX_PHOTOS} photos: at most {MAX_PHOTOS}")])
            return problems_response([Problem("request", f"not a readable multipart form ({detail})")], 400)
        try:
            unknown = sorted(set(form.keys()) - {"attributes", "photos"})
            if unknown:
                return problems_response([Problem(k, "unknown form field; expected attributes and photos")
                                          for k in unknown])
            raw = form.getlist("attributes")
            if len(raw) > 1:
                return problems_response([Problem("attributes", "given more than once")])
            attributes = raw[0] if raw else None
            if isinstance(attributes, UploadFile):
                attributes = await attributes.read(1_000_000)
            uploads = [u for u in form.getlist("photos")]
            not_files = [u for u in uploads if not isinstance(u, UploadFile)]
            if not_files:
                return problems_response([Problem("photos", "expected uploaded files, got a text field")])
            photos = [(u.filename or f"photo {i + 1}", u.file, u.size) for i, u in enumerate(uploads)
                      if u.filename or (u.size or 0) > 0]

            def work():
                t0 = time.perf_counter()
                listing = validate_listing(attributes, photos)
                return describer.describe(listing, time.perf_counter() - t0)

            try:
                result = await run_in_threadpool(work)
            except ValidationError as exc:
                return problems_response(exc.problems)
            return JSONResponse(result)
        finally:
            await form.close()

    return BodyLimit(app, settings.max_request_mb * 2**20)


def serve(settings, log_level: str = "info") -> None:
    """Load the models, warm them up, and serve until interrupted."""
    _need_serve_extra()
    import uvicorn

    from .pipeline import Describer

    describer = Describer(settings)
    describer.warm_up()
    app = create_app(describer)
    log.info("serving on http://%s:%d (page /, POST /describe)", settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, timeout_keep_alive=30)
