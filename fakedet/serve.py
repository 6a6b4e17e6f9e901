"""``fakedet serve``: a web page and JSON API over one loaded detector (FastAPI; extra ``fakedet[serve]``).

``create_app(detector)`` builds the app; the backbone, the heat-map explainer and the
nearest-neighbour index load once, in the app's lifespan. Routes:

* ``GET /``: the page (drop images or a zip: verdict, P(fake) against the threshold, heat map,
  nearest training images);
* ``POST /v1/predict`` (multipart ``files``: images and/or zips): P(fake), label, neighbours;
* ``POST /v1/explain``: the same plus a heat-map overlay (PNG, base64) per image;
* ``GET /v1/model``, ``GET /healthz``, ``GET /v1/neighbours/{row}/thumbnail``; OpenAPI at /docs.

Untrusted input: the request body is capped (``Limits.max_request_bytes``, 413), images are
decoded (not judged by name) with a pixel cap against decompression bombs, zips are expanded in
memory with member count and size caps, clients never name a file on the server (thumbnails are
addressed by row number of the model's own training table), and errors come back as 4xx JSON.
Concurrent predictions are embedded together (``Batcher``).
"""
from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
import zipfile
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from .datasets import open_source
from .decoding import ImageDecodeError, decode_image
from .explain import explainer_for
from .store import Store, StoreError
from .scoring import backbone_for


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may send."""

    max_request_bytes: int = 32_000_000
    max_pixels: int = 25_000_000
    max_images: int = 64
    max_batch: int = 32  # images embedded together across concurrent requests


ZIP_EXPANSION = 4  # a zip may expand to this many times the request cap in all


class TooLarge(Exception):
    """The request body exceeds ``Limits.max_request_bytes``."""


# --------------------------------------------------------------------------- request body cap


class BodyLimit:
    """ASGI middleware: refuse bodies above ``limit`` bytes (by Content-Length, and while streaming)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _too_large(self.limit)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge()
            return message

        return await self.app(scope, counted, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)


# --------------------------------------------------------------------------- uploads


def read_items(uploads: list[tuple[str, bytes]], limits: Limits) -> list[dict]:
    """Uploaded files (zips expanded) as ``{"name", "image"}`` or ``{"name", "error"}`` items."""
    items: list[dict] = []
    for name, data in uploads:
        if data[:4] == b"PK\x03\x04":
            items += _zip_items(name, data, limits)
        else:
            items.append(_decode(name, data, limits))
        if len(items) > limits.max_images:
            raise HTTPException(413, f"more than {limits.max_images} images in one request")
    return items


def _zip_items(name: str, data: bytes, limits: Limits) -> list[dict]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir() and "__MACOSX" not in m.filename
                   and not Path(m.filename).name.startswith(".")]
    except (zipfile.BadZipFile, OSError) as err:
        return [{"name": name, "error": f"not a readable zip: {err}"}]
    if len(members) > limits.max_images:
        raise HTTPException(413, f"{name} holds {len(members)} files, more than {limits.max_images}")
    items, budget = [], ZIP_EXPANSION * limits.max_request_bytes
    for member in members:
        label = f"{name}/{member.filename}"
        if member.file_size > min(limits.max_request_bytes, budget):
            raise HTTPException(413, f"{name} expands to more than {budget} bytes")
        try:
            with archive.open(member) as file:
                data = file.read(member.file_size + 1)
            budget -= len(data)
            items.append(_decode(label, data, limits))
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as err:
            items.append({"name": label, "error": f"cannot read: {err}"})
    return items


def _decode(name: str, data: bytes, limits: Limits) -> dict:
    try:
        return {"name": name, "image": decode_image(data, max_pixels=limits.max_pixels)}
    except ImageDecodeError as err:
        return {"name": name, "error": str(err)}


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# --------------------------------------------------------------------------- batching


class Batcher:
    """Embeds images of concurrent requests together: ``await batcher(images)`` -> (P(fake), X)."""

    def __init__(self, detector, backbone, max_batch: int):
        self.detector, self.backbone, self.max_batch = detector, backbone, max_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.lock = asyncio.Lock()  # one model call at a time (Grad-CAM hooks must not see other batches)
        self.sizes: list[int] = []  # images per model call, for tests and monitoring

    async def __call__(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            while not self.queue.empty() and sum(len(j[0]) for j in jobs) < self.max_batch:
                jobs.append(self.queue.get_nowait())
            images = [image for job, _ in jobs for image in job]
            try:
                async with self.lock:
                    X = await asyncio.to_thread(self.backbone.embed_images, images, self.max_batch)
                p = self.detector.p_fake(X)
            except Exception as err:  # noqa: BLE001 - handed to every waiting request
                for _, future in jobs:
                    if not future.done():  # a client that went away has cancelled its future
                        future.set_exception(err)
                continue
            self.sizes.append(len(images))
            start = 0
            for job, future in jobs:
                if not future.done():
                    future.set_result((p[start : start + len(job)], X[start : start + len(job)]))
                start += len(job)


# --------------------------------------------------------------------------- nearest training images


class Neighbours:
    """Cosine nearest neighbours among the model's training images (from its cache), with thumbnails; a
    fused model's are found in its first set's columns."""

    def __init__(self, detector, k: int = 5):
        self.k, self.X, self.frame, self.source, self.reason = k, None, None, "", ""
        train = detector.splits.loc[detector.splits["split"] == "train", "id"]
        try:
            store = Store(detector.training["store"])
            emb = store.load(detector.members[0].key, ids=train)
        except (KeyError, OSError, StoreError) as err:
            self.reason = f"training embeddings unavailable: {err}"
            return
        rows = np.flatnonzero(emb.frame["label"].to_numpy() >= 0)
        X = emb.X[rows]
        self.width = X.shape[1]
        self.X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        self.frame = emb.frame.iloc[rows].reset_index(drop=True)[["path", "label"]]
        self.source = detector.training.get("source", "")

    def __len__(self) -> int:
        return 0 if self.X is None else len(self.X)

    def query(self, X: np.ndarray) -> list[list[dict]]:
        if not len(self):
            return [[] for _ in X]
        X = X[:, :self.width]
        q = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        similarity = q @ self.X.T
        top = np.argsort(-similarity, axis=1)[:, : self.k]
        return [[{"row": int(r), "label": "fake" if self.frame["label"].iat[r] == 1 else "real",
                  "similarity": round(float(s[r]), 4), "path": self.frame["path"].iat[r],
                  "thumbnail": f"/v1/neighbours/{int(r)}/thumbnail"} for r in rows] for rows, s in zip(top, similarity)]

    def thumbnail(self, row: int, size: int = 96) -> bytes:
        """PNG thumbnail of training image ``row``, read from the dataset."""
        if not 0 <= row < len(self):
            raise HTTPException(404, f"no training image {row}")
        try:
            with open_source(self.source) as source:
                image = decode_image(source.read(self.frame["path"].iat[row]))
        except (OSError, ImageDecodeError) as err:
            raise HTTPException(404, f"training image {row} is not readable: {err}") from None
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()


# --------------------------------------------------------------------------- app


def _json_safe(value):
    """NaN / infinity (undefined metrics) -> None, recursively: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def model_info(detector, state) -> dict:
    return {"backbone": detector.backbone, "fingerprint": detector.fingerprint, "key": detector.key,
            "head": detector.head, "threshold": detector.threshold, "metrics": _json_safe(detector.metrics),
            "dataset": detector.training.get("dataset", ""),
            "explain_method": state.explainer.method if state.explainer else f"none: {state.no_maps}",
            "neighbours": len(state.neighbours), "neighbours_note": state.neighbours.reason,
            "sets": [m.key for m in detector.members], "input_size": state.backbone.preprocess.size,
            "limits": asdict(state.limits)}


def create_app(detector, *, backbone=None, checkpoint=None, device: str = "auto", limits: Limits = Limits(),
               k: int = 5) -> FastAPI:
    """The FastAPI app for a loaded ``detector`` (its backbone built once at start-up unless given)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.backbone = backbone or backbone_for(detector, checkpoint, device)
        try:
            state.explainer, state.no_maps = explainer_for(detector, state.backbone), ""
        except ValueError as err:  # a concatenated fused model: verdicts without heat maps
            state.explainer, state.no_maps = None, str(err)
        state.neighbours = Neighbours(detector, k)
        state.limits = limits
        state.batcher = Batcher(detector, state.backbone, limits.max_batch)
        task = asyncio.create_task(state.batcher.run())
        yield
        task.cancel()

    app = FastAPI(title="fakedet", summary="Is this image AI-generated?", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=limits.max_request_bytes)
    app.add_exception_handler(TooLarge, lambda request, exc: _too_large(limits.max_request_bytes))
    page = Environment(loader=PackageLoader("fakedet", "templates"), autoescape=select_autoescape()).get_template(
        "serve.html")

    async def score(request: Request, files: list[UploadFile], heatmaps: bool) -> dict:
        state = request.app.state
        uploads = [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
        items = read_items(uploads, state.limits)
        good = [item for item in items if "image" in item]
        if not good:
            raise HTTPException(400, "no readable image: " + "; ".join(f"{i['name']}: {i['error']}" for i in items))
        if heatmaps and state.explainer is None:
            raise HTTPException(422, state.no_maps)
        p, X = await state.batcher([item["image"] for item in good])
        maps = None
        if heatmaps:
            async with state.batcher.lock:
                maps = await asyncio.to_thread(state.explainer, [item["image"] for item in good])
        domain = detector.domain_score(X)
        domain = [None] * len(good) if domain is None else domain
        for index, (item, p_fake, near, score) in enumerate(zip(good, p, state.neighbours.query(X), domain)):
            item.update(p_fake=float(p_fake), label="fake" if p_fake >= detector.threshold else "real",
                        neighbours=near, domain_score=None if score is None else float(score),
                        out_of_domain=None if score is None else bool(score > detector.domain.threshold))
            if maps is not None:
                item.update(heatmap_png=png_data_url(maps[index].overlay()), method=maps[index].method)
        results = [{k: v for k, v in item.items() if k != "image"} for item in items]
        return {"threshold": detector.threshold, "results": results}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request):
        return page.render(model=model_info(detector, request.app.state))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model(request: Request):
        """Backbone, fingerprint, head, threshold, metrics and limits of the served model."""
        return model_info(detector, request.app.state)

    @app.post("/v1/predict")
    async def predict(request: Request, files: list[UploadFile] = File(..., description="images and/or zips")):
        """P(fake), label and nearest training images per uploaded image (zips are expanded)."""
        return await score(request, files, heatmaps=False)

    @app.post("/v1/explain")
    async def explain(request: Request, files: list[UploadFile] = File(..., description="images and/or zips")):
        """As /v1/predict, plus a heat-map overlay (PNG data URL) of what drove P(fake) per image."""
        return await score(request, files, heatmaps=True)

    @app.get("/v1/neighbours/{row}/thumbnail", responses={200: {"content": {"image/png": {}}}})
    async def thumbnail(request: Request, row: int):
        """Thumbnail of a training image named in a result's ``neighbours``."""
        data = await asyncio.to_thread(request.app.state.neighbours.thumbnail, row)
        return Response(data, media_type="image/png")

    return app


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 120) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread (port 0: a free one); yields its URL, stops on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"uvicorn did not start within {timeout:g} s")
    try:
        yield f"http://{host}:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
