"""HTML report: shortcut and leak checks, the page with and without a model, escaping, offline
self-containment, cached projections, a missing dataset source, the CLI, and a headless-Chromium check."""
from __future__ import annotations

import base64
import io
import json
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import encode_image, make_image, truncated_jpeg, write_tree
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from browser import BrowserUnavailable, chromium  # noqa: E402  (scripts/browser.py, not in the package)

import fakedet.project as projection  # noqa: E402
from fakedet.cli import cli  # noqa: E402
from fakedet.datasets import duplicates  # noqa: E402
from fakedet.extract import extract  # noqa: E402
from fakedet.metrics import binary_metrics  # noqa: E402
from fakedet.project import ProjectionParams  # noqa: E402
from fakedet.report import ModelResult, render_report, report_name  # noqa: E402
from fakedet.report_dataset import leak_warnings, shortcut_warnings  # noqa: E402
from fakedet.store import Store  # noqa: E402
from fakedet.workflow import fit, report  # noqa: E402
from fakedet.scoring import evaluate

ODD_NAME = "train/real/<b>odd & name</b>.jpg"
PROJECTION = ProjectionParams("tsne", perplexity=5, pca=10)  # fast at this size


class Page(HTMLParser):
    """Images, section ids, warning boxes and visible text of a report."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.ids, self.scripts, self.links, self.warnings, self.text = [], [], 0, [], [], []
        self._in_warn = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "link" or "href" in attrs:
            self.links.append(attrs.get("href"))
        if "id" in attrs:
            self.ids.append(attrs["id"])
        self._in_warn = attrs.get("class") == "warn"

    def handle_data(self, data):
        self.text.append(data)
        if self._in_warn:
            self.warnings.append(data)
            self._in_warn = False

    @property
    def plain(self) -> str:
        return " ".join(self.text)


def files_table(rows: list[tuple[int, str, int, int, int]]) -> pd.DataFrame:
    """An image table from (label, format, width, height, nbytes) rows."""
    return pd.DataFrame([
        {"id": f"{i:032x}", "path": f"{i}.x", "split": "train", "label": label, "format": fmt,
         "width": w, "height": h, "nbytes": n, "error": ""}
        for i, (label, fmt, w, h, n) in enumerate(rows)
    ])


def test_shortcut_warnings_detect_format_resolution_and_size():
    fair = files_table([(i % 2, "JPEG", 32, 32, 1000 + (i * 37) % 200) for i in range(40)])
    assert shortcut_warnings(fair) == []
    formats = fair.assign(format=np.where(fair["label"] == 1, "PNG", "JPEG"))
    [warning] = shortcut_warnings(formats)
    assert "formats differ" in warning and "100% JPEG" in warning and "100% PNG" in warning
    sizes = fair.assign(width=np.where(fair["label"] == 1, 512, 32), height=np.where(fair["label"] == 1, 512, 32))
    [warning] = shortcut_warnings(sizes)
    assert "Resolutions differ" in warning and "512x512" in warning
    bigger = fair.assign(nbytes=fair["nbytes"] * np.where(fair["label"] == 1, 2, 1))
    [warning] = shortcut_warnings(bigger)
    assert "fake files are larger" in warning and "ROC AUC 1.00" in warning
    # same means, but file size alone separates the classes
    split = fair.assign(nbytes=np.where(fair["label"] == 1, 1010, 1000))
    assert "ROC AUC 1.00" in shortcut_warnings(split)[0]
    # unreadable and unlabelled files are ignored; one class only: nothing to compare
    assert shortcut_warnings(formats.assign(error=np.where(formats["label"] == 1, "bad", ""))) == []
    assert shortcut_warnings(formats.assign(label=-1)) == []


def test_leak_warnings():
    frame = files_table([(0, "JPEG", 8, 8, 1)] * 4).assign(
        id=["a", "a", "b", "b"], label=[0, 1, 0, 0], split=["train", "train", "train", "test"])
    warnings = leak_warnings(duplicates(frame))
    assert len(warnings) == 2
    assert warnings[0].startswith("1 identical images are labelled both real and fake")
    assert warnings[1].startswith("1 identical images appear in more than one split")
    assert leak_warnings(duplicates(frame.assign(id=["a", "b", "c", "d"]))) == []


def test_report_name():
    assert report_name("cifake", "effnet-lite0-abc") == "cifake-effnet-lite0-abc"
    assert report_name("cifake", "effnet-lite0-abc", "cifake-effnet-lite0-abc-logreg") == "cifake-effnet-lite0-abc-logreg"
    assert report_name("faces", "k", "my model/v2") == "faces-k-my_model_v2"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small extracted dataset with a format shortcut, a cross-split duplicate, an unreadable file
    with an HTML-like name, and two 'fake' test images that look real (mistakes), plus a fitted model."""
    root = tmp_path_factory.mktemp("report") / "toy"
    files = {}
    for split, n in (("train", 10), ("test", 5)):
        for i in range(n):
            seed = 100 * (split == "test") + i
            files[f"{split}/real/r{i:02d}.jpg"] = encode_image(make_image("smooth", 32, seed), "JPEG")
            files[f"{split}/fake/f{i:02d}.png"] = encode_image(make_image("checker", 32, seed), "PNG")
    files["test/fake/looks_real_0.jpg"] = encode_image(make_image("smooth", 32, 500), "JPEG")
    files["test/fake/looks_real_1.jpg"] = encode_image(make_image("smooth", 32, 501), "JPEG")
    files["test/real/copy_of_r00.jpg"] = files["train/real/r00.jpg"]
    files[ODD_NAME] = truncated_jpeg()
    write_tree(root, files)
    cache = root.parent / "cache"
    result = extract(root, "effnet-lite0", cache=cache, resize="64", workers=0, progress=False)
    detector = fit(result.store, head="logreg")
    model = detector.save(cache / "models" / "toy-logreg")
    return {"root": root, "cache": cache, "store": Store(result.store), "key": result.key, "model": model,
            "detector": detector}


@pytest.fixture(scope="module")
def pages(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    plain = report(dataset["store"].path, out=out / "plain", projection=PROJECTION, n_jobs=1)
    with_model = report(model="toy-logreg", cache=dataset["cache"], out=out / "model.html",
                              projection=PROJECTION, n_jobs=1, command="fakedet report -m toy-logreg")
    return {"plain": plain, "model": with_model}


def check_self_contained(text: str, page: Page) -> None:
    """Every image an inline, decodable PNG; nothing loaded from elsewhere; no scripts."""
    assert page.images, "no images"
    for attrs in page.images:
        assert attrs["src"].startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))) as image:
            image.load()  # decodes every pixel: raises on truncated or corrupt data
            assert image.format == "PNG" and min(image.size) > 0
    assert page.scripts == 0 and "http://" not in text and "https://" not in text and "url(" not in text
    assert all(href.startswith("#") or href == "data:," for href in page.links)
    assert "Content-Security-Policy" in text and "default-src 'none'" in text


def test_report_without_model(dataset, pages):
    path = pages["plain"]
    assert path.name == "index.html" and path.parent.name == "plain"
    text = path.read_text()
    page = Page(text)
    check_self_contained(text, page)
    assert page.ids == ["dataset", "projection", "provenance"]
    warnings = " ".join(page.warnings)
    assert "Image formats differ between real and fake (real: 100% JPEG; fake: " in warnings
    assert "1 identical images appear in more than one split" in warnings
    # counts by split and label (files), distinct images, the unreadable file (escaped, never raw)
    assert "<td>test</td><td class=\"num\">7</td><td class=\"num\">6</td><td class=\"num\">13</td>" in text
    assert "&lt;b&gt;odd &amp; name&lt;/b&gt;.jpg" in text and "<b>odd" not in text
    assert ODD_NAME in page.plain and "1 files could not be embedded" in page.plain
    assert "64 x 64" not in page.plain  # its header parsed (64 x 64) but it is left out of the statistics
    assert "test/real/copy_of_r00.jpg | train/real/r00.jpg" in page.plain
    assert "tsne-p5-s0-pca10-sub20000" in page.plain and "32 of 32 images" in page.plain
    assert len(page.images) == 2  # distributions + projection
    assert "scikit-learn" in page.plain and "umap-learn" in page.plain


def test_report_with_model(dataset, pages):
    text = pages["model"].read_text()
    page = Page(text)
    check_self_contained(text, page)
    assert page.ids == ["dataset", "projection", "model", "provenance"]
    assert pages["model"].name == "model.html"
    assert "fakedet report -m toy-logreg" in page.plain
    assert "toy/test (this report)" in page.plain and "logreg" in page.plain
    alts = [a["alt"] for a in page.images]
    for plot in ("confusion matrix", "ROC curve", "precision-recall curve", "calibration curve",
                 "histogram of P(fake) by true class"):
        assert plot in alts
    predictions = evaluate(dataset["detector"]).predictions
    wrong = predictions[predictions["pred"] != predictions["label"]]
    assert len(wrong) >= 2 and {"test/fake/looks_real_0.jpg", "test/fake/looks_real_1.jpg"} <= set(wrong["path"])
    thumbs = [a for a in page.images if a["alt"] in set(wrong["path"])]
    assert len(thumbs) == len(wrong)  # one thumbnail per mistake (fewer than 8 of each kind here)
    for attrs in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))) as image:
            assert max(image.size) == 112
    (tn, fp), (fn, tp) = json.loads((dataset["model"] / "metrics.json").read_text())["test"]["confusion"]
    assert fn + fp == len(wrong)


def test_second_report_reuses_cached_projection(dataset, pages, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("projection recomputed")

    monkeypatch.setattr(projection, "compute_projection", fail)
    path = report(dataset["store"].path, out=tmp_path / "again.html", projection=PROJECTION)
    assert "read from the cache" in path.read_text()
    with pytest.raises(AssertionError, match="recomputed"):
        report(dataset["store"].path, out=tmp_path / "new.html",
                     projection=ProjectionParams("pca", subsample=10))


def test_missing_source_and_given_predictions(dataset, tmp_path):
    copy = tmp_path / "moved.h5"
    shutil.copy(dataset["store"].path, copy)
    with h5py.File(copy, "a") as f:
        f.attrs["source"] = str(tmp_path / "gone")
    store = Store(copy)
    emb = store.load(dataset["key"])
    labels = emb.frame["label"].to_numpy()
    p_fake = np.where(labels == 1, 0.9, 0.1)
    p_fake[:3] = 1 - p_fake[:3]  # three confident mistakes
    predictions = emb.frame[["id", "path", "split", "label"]].assign(p_fake=p_fake, pred=(p_fake >= 0.5).astype(int))
    metrics = binary_metrics(labels, p_fake)
    model = ModelResult(name="given", threshold=0.5, predictions=predictions, metrics={"all": metrics},
                        details={"head": "<i>hand-made</i>"})
    text = render_report(store, dataset["key"], model=model, projection=PROJECTION, command="test")
    page = Page(text)
    assert "Thumbnails not shown: the dataset source" in page.plain and "is no longer available" in page.plain
    for path in emb.frame["path"][:3]:  # listed with their score, without a picture
        assert f"<figcaption>{path}<br>" in text
    assert not [a for a in page.images if a["alt"] in set(emb.frame["path"])]
    assert "&lt;i&gt;hand-made&lt;/i&gt;" in text and "<i>hand-made" not in text
    assert f"{100 * metrics['accuracy']:.2f}%" in page.plain


def test_cli_report(dataset, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(cli, ["report", "--cache", str(dataset["cache"]), "-m", "toy-logreg",
                                      "--method", "pca", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"report written to {out / 'index.html'}" in result.output
    assert 'id="model"' in (out / "index.html").read_text()
    missing = CliRunner().invoke(cli, ["report", "--cache", str(dataset["cache"]), "-m", "no-such-model"])
    assert missing.exit_code == 2 and "no model no-such-model" in missing.output


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    try:
        driver = chromium()
    except BrowserUnavailable as err:
        pytest.skip(f"no headless browser: {err}")
    yield driver
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


def page_problems(driver, path: Path) -> list[str]:
    """Images that did not load and console errors (SEVERE) when ``path`` is opened from disk."""
    driver.get_log("browser")  # drop messages of earlier pages
    driver.get(path.resolve().as_uri())
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
    problems = [f"image not loaded: {alt}" for alt, complete, width in images if not (complete and width > 0)]
    problems += [f"console: {entry['message']}" for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return problems if images else ["no images"] + problems


def test_reports_render_in_chromium(browser, pages, tmp_path):
    for path in pages.values():
        assert page_problems(browser, path) == []
    # the check itself catches a broken image and a blocked external resource
    broken = tmp_path / "broken.html"
    broken.write_text(pages["plain"].read_text().replace(
        "<body>", '<body><img alt="broken" src="data:image/png;base64,AAAA">'
                  '<img alt="remote" src="https://example.invalid/x.png">'))
    problems = page_problems(browser, broken)
    assert "image not loaded: broken" in problems and "image not loaded: remote" in problems
    assert any(p.startswith("console:") for p in problems)
