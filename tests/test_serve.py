"""fakedet serve: the JSON API through FastAPI's TestClient, limits on untrusted input, batching."""
from __future__ import annotations

import asyncio
import base64
import copy
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import bomb_png, encode_image, make_image, truncated_jpeg, write_zip
from fitted import fitted, fused
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fakedet.cli import cli  # noqa: E402
from fakedet.serve import Batcher, Limits, background_server, create_app  # noqa: E402
from fakedet.store import Store  # noqa: E402

LIMITS = Limits(max_request_bytes=300_000, max_pixels=200_000, max_images=6, max_batch=8)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return fitted(tmp_path_factory.mktemp("serve"), "logreg")


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model.detector, backbone=model.backbone, limits=LIMITS, k=3)) as client:
        yield client


def png(kind: str, seed: int, size: int = 48) -> bytes:
    return encode_image(make_image(kind, size, seed), "PNG")


def post(client, route: str, *files: tuple[str, bytes]):
    return client.post(route, files=[("files", (name, data, "application/octet-stream")) for name, data in files])


def test_health_and_model(client, model):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["head"] == "logreg" and info["fingerprint"] == model.detector.fingerprint
    assert info["threshold"] == pytest.approx(model.detector.threshold)
    assert info["explain_method"].startswith("grad-cam") and 0 < info["neighbours"] <= 24
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert 'id="model"' in client.get("/").text


def test_predict_scores_like_the_library_and_finds_the_training_image(client, model):
    splits = model.detector.splits
    trained = set(splits.loc[splits["split"] == "train", "id"])
    images_table = Store(model.detector.training["store"]).images()
    train_name = images_table.loc[images_table["id"].isin(trained), "path"].iloc[0]
    with zipfile.ZipFile(model.data) as archive:
        train_bytes = archive.read(train_name)
    body = post(client, "/v1/predict", ("a.png", png("checker", 7)), ("b.png", png("smooth", 8)),
                ("train.jpg", train_bytes)).json()
    results = body["results"]
    assert [r["name"] for r in results] == ["a.png", "b.png", "train.jpg"]
    images = [make_image("checker", 48, 7), make_image("smooth", 48, 8), Image.open(io.BytesIO(train_bytes))]
    expected = model.detector.p_fake(model.backbone.embed_images([im.convert("RGB") for im in images]))
    assert np.allclose([r["p_fake"] for r in results], expected, atol=1e-5)
    assert [r["label"] for r in results] == ["fake" if p >= body["threshold"] else "real" for p in expected]
    assert all(len(r["neighbours"]) == 3 and isinstance(r["out_of_domain"], bool)
               and r["domain_score"] > 0 for r in results)
    nearest = results[2]["neighbours"][0]  # a training image finds itself
    assert nearest["path"] == train_name and nearest["similarity"] > 0.999
    assert len(trained) == client.get("/v1/model").json()["neighbours"]
    thumbnail = client.get(nearest["thumbnail"])
    assert thumbnail.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumbnail.content)).size[0] <= 96


def test_zip_upload_expands_members_and_reports_broken_ones(client, tmp_path):
    archive = write_zip(tmp_path / "batch.zip", {"x/1.png": png("smooth", 1), "x/2.png": png("checker", 2),
                                                 "x/broken.jpg": truncated_jpeg(), "__MACOSX/._1.png": b"junk"})
    results = post(client, "/v1/predict", ("batch.zip", archive.read_bytes())).json()["results"]
    assert [r["name"] for r in results] == ["batch.zip/x/1.png", "batch.zip/x/2.png", "batch.zip/x/broken.jpg"]
    assert results[2]["error"] and "p_fake" not in results[2]
    assert all(0 <= r["p_fake"] <= 1 for r in results[:2])


def test_explain_returns_a_heat_map_overlay(client, model):
    result = post(client, "/v1/explain", ("a.png", png("checker", 3)))
    assert result.status_code == 200
    item = result.json()["results"][0]
    header, data = item["heatmap_png"].split(",", 1)
    assert header == "data:image/png;base64"
    size = model.backbone.preprocess.size
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (size, size)
    assert item["method"].startswith("grad-cam")


def deflated_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("files, status, words", [
    ([], 422, ""),
    ([("notes.txt", b"hello, not an image")], 400, "no readable image"),
    ([("bomb.png", bomb_png(20_000, 20_000))], 400, "pixels"),
    ([("big.png", b"\0" * 400_000)], 413, "request body"),
    ([(f"{i}.png", png("smooth", i, 16)) for i in range(7)], 413, "more than 6 images"),
    ([("a.png", truncated_jpeg())], 400, "no readable image"),
    ([("bomb.zip", deflated_zip({"zeros.png": b"\0" * 2_000_000}))], 413, "expands to more than"),
    ([("seven.zip", deflated_zip({f"{i}.png": png("smooth", i, 16) for i in range(7)}))], 413, "more than 6"),
    ([("fake.zip", b"PK\x03\x04 not really a zip")], 400, "not a readable zip"),
])
def test_malformed_requests_get_4xx_json_and_the_server_keeps_serving(client, files, status, words):
    response = post(client, "/v1/predict", *files) if files else client.post("/v1/predict")
    assert response.status_code == status
    assert words in str(response.json()["detail"])
    assert post(client, "/v1/predict", ("ok.png", png("smooth", 1))).status_code == 200


def test_undefined_metrics_are_sent_as_null(model):
    detector = copy.copy(model.detector)
    detector.metrics = {"val": {"roc_auc": float("nan"), "accuracy": 1.0}}
    with TestClient(create_app(detector, backbone=model.backbone, limits=LIMITS)) as client:
        assert client.get("/v1/model").json()["metrics"] == {"val": {"roc_auc": None, "accuracy": 1.0}}


def test_no_server_paths_from_clients(client):
    assert client.get("/v1/neighbours/999999/thumbnail").status_code == 404
    assert client.get("/v1/neighbours/..%2F..%2Fetc%2Fpasswd/thumbnail").status_code in (404, 422)
    named = post(client, "/v1/predict", ("/etc/passwd", png("smooth", 2))).json()["results"][0]
    assert named["name"] == "/etc/passwd" and "p_fake" in named  # a label only, never opened


def test_concurrent_requests_are_embedded_in_one_batch(model):
    batcher = Batcher(model.detector, model.backbone, max_batch=16)
    groups = [[make_image("smooth", 48, s)] * n for s, n in ((1, 2), (2, 3), (3, 1))]

    async def scenario():
        calls = [asyncio.create_task(batcher(g)) for g in groups]
        for _ in range(100):  # let the three requests reach the queue before the worker starts
            if batcher.queue.qsize() == len(groups):
                break
            await asyncio.sleep(0)
        worker = asyncio.create_task(batcher.run())
        out = await asyncio.gather(*calls)
        worker.cancel()
        return out

    results = asyncio.run(scenario())
    assert batcher.sizes == [6]
    for group, (p, X) in zip(groups, results):
        assert np.allclose(p, model.detector.p_fake(model.backbone.embed_images(group)), atol=1e-5)
        assert X.shape == (len(group), model.backbone.dim)


def test_serve_binds_loopback_by_default():
    host = next(p for p in cli.commands["serve"].params if p.name == "host")
    assert host.default == "127.0.0.1"


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture
def live_server(model):
    """The app under uvicorn on a free loopback port, stopped after the test."""
    with background_server(create_app(model.detector, backbone=model.backbone, limits=LIMITS, k=3)) as url:
        yield url


def test_page_in_chromium_shows_verdict_and_heat_map(live_server, tmp_path):
    import os
    import shutil

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from browser import BrowserUnavailable, chromium  # scripts/browser.py, not in the package

    try:
        driver = chromium(1100, 900)
    except BrowserUnavailable as err:
        pytest.skip(f"no headless browser: {err}")
    photo, generated = tmp_path / "holiday photo.jpg", tmp_path / "generated.png"
    make_image("smooth", (320, 240), 11).save(photo, quality=92)
    make_image("checker", (256, 256), 12).save(generated)
    try:
        driver.get(live_server)
        assert "is this image generated" in driver.title
        driver.find_element(By.ID, "files").send_keys(f"{photo}\n{generated}")
        loaded = ("return Array.from(document.querySelectorAll('.card.result img')).filter("
                  "i => i.complete && i.naturalWidth > 0).length")
        # 2 heat maps + 2 x 3 neighbour thumbnails
        WebDriverWait(driver, 180, poll_frequency=0.2).until(lambda d: d.execute_script(loaded) == 8)
        cards = driver.find_elements(By.CSS_SELECTOR, ".card.result")
        names = sorted(c.find_element(By.CLASS_NAME, "name").text for c in cards)
        assert names == ["generated.png", "holiday photo.jpg"]
        verdicts = {c.find_element(By.CLASS_NAME, "name").text: c.find_element(By.CLASS_NAME, "verdict").text
                    for c in cards}
        assert verdicts["generated.png"] == "Generated (fake)" and verdicts["holiday photo.jpg"] == "Real photo"
        assert all("P(fake) = " in c.text and "threshold" in c.text for c in cards)
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        shot = tmp_path / "serve.png"
        driver.save_screenshot(str(shot))
        if os.environ.get("FAKEDET_SCREENSHOT"):  # regenerate docs/serve.png: FAKEDET_SCREENSHOT=docs/serve.png
            shutil.copy(shot, os.environ["FAKEDET_SCREENSHOT"])
    finally:
        driver.quit()
        shutil.rmtree(driver.profile_dir, ignore_errors=True)


def test_a_fused_model_is_served_with_every_sets_backbone(tmp_path):
    images = [make_image("checker", 48, 7), make_image("smooth", 48, 8)]
    files = [(f"{i}.png", encode_image(image, "PNG")) for i, image in enumerate(images)]
    for fusion in ("stack", "concat"):
        model = fused(tmp_path, fusion, sizes=("64", "48"))
        with TestClient(create_app(model.detector, backbone=model.backbone, limits=LIMITS, k=2)) as client:
            info = client.get("/v1/model").json()
            assert info["sets"] == [m.key for m in model.detector.members] and info["input_size"] == 64
            results = post(client, "/v1/predict", *files).json()["results"]
            expected = model.detector.p_fake(model.backbone.embed_images(images))  # both sets' columns
            assert np.allclose([r["p_fake"] for r in results], expected, atol=1e-5)
            assert all(len(r["neighbours"]) == 2 and isinstance(r["out_of_domain"], bool) for r in results)
            explained = post(client, "/v1/explain", *files)
            if fusion == "stack":
                assert explained.status_code == 200 and info["explain_method"].startswith("mean over its sets")
                assert all(r["heatmap_png"].startswith("data:image/png") for r in explained.json()["results"])
            else:  # verdicts, but no heat maps for one head over several backbones
                assert explained.status_code == 422 and "--fusion concat" in explained.json()["detail"]
                assert info["explain_method"].startswith("none: heat maps of a model fit with --fusion concat")
