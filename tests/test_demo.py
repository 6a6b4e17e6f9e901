"""The synthetic demo set and the README's end-to-end job on it."""
from __future__ import annotations

from fakedet.datasets import discover
from fakedet.demo import make_demo_dataset, run_demo


def test_demo_dataset_layout_and_idempotence(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", n_per_class=8)
    frame = discover(root, progress=False)
    assert len(frame) == 16 and frame["id"].is_unique and (frame["error"] == "").all()
    assert frame.groupby(["split", "label"]).size().to_dict() == {("test", 0): 2, ("test", 1): 2,
                                                                   ("train", 0): 6, ("train", 1): 6}
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}
    make_demo_dataset(tmp_path / "demo", n_per_class=8)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")} == before


def test_run_demo_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report goes to ./reports/
    lines: list[str] = []
    report = run_demo(tmp_path / "images", cache=tmp_path / "cache", progress=False, echo=lines.append)
    text = "\n".join(lines)
    assert report.is_file() and report.suffix == ".html" and report.parts[0] == "reports"
    assert f"cache: {tmp_path / 'cache' / 'images.h5'}" in text and "120 embedded now" in text
    assert "accuracy" in text and "report:" in text
    assert (tmp_path / "cache" / "models").is_dir()
