"""Runtimes: ONNX export equal to torch per family and layer option, its cache, fallback, auto by measurement."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from conftest import layout_files, write_tree
from safetensors.torch import save_file

from fakedet import onnx_runtime, runtimes
from fakedet.backbones import create_backbone
from fakedet.cli import cli
from fakedet.extract import extract
from fakedet.finetuned import checkpoint, save_atomic
from fakedet.onnx_runtime import TOLERANCE, load_onnx, onnx_path
from fakedet.runtimes import use_runtime
from fakedet.store import Store

pytestmark = pytest.mark.skipif(onnx_runtime.onnx_available() is not None, reason="needs fakedet[onnx]")


def images(size: int, n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("timm") / "tiny.safetensors"
    save_file(timm.create_model("test_efficientnet", pretrained=False).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def finetuned_checkpoint(tmp_path_factory):
    """A fine-tune checkpoint as `fakedet finetune` writes it: lite0 with moved weights, trained at 48 px."""
    base = create_backbone("effnet-lite0", precision="fp32", device="cpu")
    torch.manual_seed(1)
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() and "running" not in k else v
             for k, v in base.model.state_dict().items()}
    path = tmp_path_factory.mktemp("finetuned") / "best.pt"
    save_atomic(checkpoint(base_spec="effnet-lite0", base_checkpoint=None, backbone=state, head={},
                           preprocess={"size": 48, "policy": "resize", "crop_pct": 1.0, "interpolation": "bicubic"},
                           epoch=0, metrics={}), path)
    return path


CASES = [  # (family, layers, scales): every family and layer option, with the antialiased rescale
    ("effnet-lite0", "final", None),
    ("effnet-lite0", "multi", None),
    ("effnet-lite0", "blocks", "1,0.5"),
    ("timm", "final", None),
    ("timm", "blocks", "1,0.5"),
    ("clip", "final", None),
    ("clip", "multi", None),  # a ViT with a fixed position table cannot take other scales, in torch either
    ("finetuned", "blocks", None),
]


@pytest.mark.slow
@pytest.mark.parametrize("family, layers, scales", CASES)
def test_onnx_equals_torch(family, layers, scales, tiny_clip, timm_checkpoint, finetuned_checkpoint, tmp_path):
    spec, options = {
        "effnet-lite0": ("effnet-lite0", {"resize": "64"}),
        "timm": ("timm:test_efficientnet", {"checkpoint": timm_checkpoint, "resize": "64"}),
        "clip": (f"clip:{tiny_clip}:random", {}),
        "finetuned": (str(finetuned_checkpoint), {}),
    }[family]
    torch.manual_seed(0)
    backbone = create_backbone(spec, layers=layers, scales=scales, precision="fp32", device="cpu", **options)
    size = backbone.preprocess.size
    batches = [images(size, 5, seed=1), images(size, 1, seed=2)]  # the batch dimension is dynamic
    expected = [backbone.embed(b) for b in batches]
    use_runtime(backbone, "onnx", tmp_path, precision="fp32")
    assert backbone.runtime == "onnx", backbone.runtime_reason
    for batch, reference in zip(batches, expected):
        got = backbone.embed(batch)
        assert got.shape == reference.shape and got.dtype == np.float32
        assert relative_difference(got, reference) <= TOLERANCE
    assert onnx_path(backbone, tmp_path).is_file()


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """lite0 at 32 px with its verified ONNX file in a cache folder."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    backbone = create_backbone("effnet-lite0", resize="32", precision="fp32", device="cpu")
    load_onnx(backbone, folder)
    return backbone, folder


@pytest.mark.slow
def test_cached_onnx_is_reused_not_reexported(lite, monkeypatch):
    backbone, folder = lite
    monkeypatch.setattr(onnx_runtime, "export_onnx", lambda *a: pytest.fail("re-exported a valid file"))
    runner = load_onnx(backbone, folder)
    batch = images(32, 3, seed=5)
    assert relative_difference(runner(batch), backbone.embed(batch)) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "flipped", "other-fingerprint", "no-sidecar"])
def test_bad_cached_onnx_is_rebuilt(damage, lite, tmp_path):
    backbone, folder = lite
    good = onnx_path(backbone, folder)
    path = onnx_path(backbone, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(good.read_bytes())
    path.with_suffix(".json").write_text(good.with_suffix(".json").read_text())
    if damage == "garbage":
        path.write_bytes(b"not an onnx file")
    elif damage == "flipped":  # still loads, but computes something else: the sidecar hash catches it
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "other-fingerprint":
        sidecar = json.loads(path.with_suffix(".json").read_text())
        path.with_suffix(".json").write_text(json.dumps({**sidecar, "fingerprint": "0" * 32}))
    else:
        path.with_suffix(".json").unlink()
    before = path.stat().st_mtime_ns, path.read_bytes()
    runner = load_onnx(backbone, tmp_path)
    assert (path.stat().st_mtime_ns, path.read_bytes()) != before  # written anew
    batch = images(32, 2, seed=6)
    assert relative_difference(runner(batch), backbone.embed(batch)) <= TOLERANCE


def test_export_failure_falls_back_to_torch_with_the_reason(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise RuntimeError("operator frobnicate is not supported")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    backbone = create_backbone("effnet-lite0", resize="32", precision="fp32", device="cpu")
    use_runtime(backbone, "onnx", tmp_path, precision="fp32")
    assert backbone.runtime == "torch" and backbone.runner is None
    assert "frobnicate" in backbone.runtime_reason and "onnx" in runtimes.describe(backbone)


@pytest.mark.slow
def test_onnx_differing_from_torch_is_refused(lite, monkeypatch, tmp_path):
    backbone, _ = lite
    monkeypatch.setattr(onnx_runtime, "difference", lambda *a: 0.5)
    with pytest.raises(onnx_runtime.ExportError, match="differs from torch by 0.5"):
        load_onnx(backbone, tmp_path)
    assert not onnx_path(backbone, tmp_path).exists()


def run_cli(*args, code: int = 0) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def test_unavailable_runtime_named_explicitly_exits_2_with_the_install_command(monkeypatch, image_tree, tmp_path):
    data = image_tree()
    monkeypatch.setattr(onnx_runtime, "onnx_available", lambda: "onnxruntime")
    out = run_cli("extract", data, "--resize", "32", "--runtime", "onnx", "--cache", tmp_path, "-q", code=2)
    assert "onnxruntime" in out and 'pip install "fakedet[onnx]"' in out
    monkeypatch.setattr(runtimes, "compiler_missing", lambda device: "torch.compile needs a C++ compiler")
    out = run_cli("extract", data, "--resize", "32", "--runtime", "compile", "--cache", tmp_path, "-q", code=2)
    assert "C++ compiler" in out


def test_onnx_with_a_low_precision_exits_2(image_tree, tmp_path):
    out = run_cli("extract", image_tree(), "--resize", "32", "--precision", "bf16", "--runtime", "onnx",
                  "--cache", tmp_path, "-q", code=2)
    assert "fp32" in out and "--runtime torch" in out


@pytest.mark.slow
def test_runtime_is_recorded_but_not_fingerprinted(image_tree, tmp_path):
    data = image_tree({"train/REAL": 3, "train/FAKE": 3})
    results = {rt: extract(data, "effnet-lite0", cache=tmp_path / rt, resize="32", precision="fp32", runtime=rt,
                           progress=False) for rt in ("torch", "onnx")}
    assert results["torch"].key == results["onnx"].key
    sets = {rt: Store(r.store).load(r.key) for rt, r in results.items()}
    assert {rt: s.attrs["runtime"] for rt, s in sets.items()} == {"torch": "torch", "onnx": "onnx"}
    assert "runtime: onnx fp32" in results["onnx"].summary()
    assert relative_difference(sets["onnx"].X, sets["torch"].X) <= TOLERANCE


@pytest.mark.slow
def test_auto_measures_once_per_machine_and_backbone_and_info_shows_it(image_tree, tmp_path, monkeypatch):
    data = write_tree(tmp_path / "data", layout_files({"train/REAL": 2, "train/FAKE": 2}, size=32))
    calls = []
    measure = runtimes.measure

    def counted(*args, **kwargs):
        calls.append(args[1])
        return measure(*args, **kwargs)

    monkeypatch.setattr(runtimes, "measure", counted)
    first = extract(data, "effnet-lite0", cache=tmp_path, resize="32", runtime="auto", batch_size=4, progress=False)
    book = json.loads((tmp_path / runtimes.MEASURE_FILE).read_text())
    (entry,) = book[runtimes.machine()].values()
    rates = entry["rates"]
    assert set(rates) == {"torch/fp32", "torch/bf16", "onnx/fp32"} and all(r > 0 for r in rates.values())
    best = max(rates, key=rates.get)
    assert first.runtime.startswith(best.replace("/", " ")) and "auto:" in first.runtime
    assert Store(first.store).load(first.key).attrs["runtime"] == best.split("/")[0]
    again = extract(data, "effnet-lite0", cache=tmp_path, resize="32", runtime="auto", batch_size=4,
                    progress=False)
    assert len(calls) == 1 and again.key == first.key  # the second run reads the cached measurement
    out = run_cli("info", "--runtimes", "--cache", tmp_path)
    assert "this machine" in out and "onnx/fp32" in out and best in out
    assert "no runtime measurements" in run_cli("info", "--runtimes", "--cache", tmp_path / "empty")


def test_auto_keeps_a_fixed_precision(tmp_path, monkeypatch):
    backbone = create_backbone("effnet-lite0", resize="32", precision="bf16", device="cpu")
    assert runtimes.candidates(backbone, free=False) == [("torch", "bf16")]
    use_runtime(backbone, "auto", tmp_path, precision="bf16")
    assert (backbone.runtime, backbone.precision) == ("torch", "bf16")
    assert not (tmp_path / runtimes.MEASURE_FILE).exists()  # nothing to choose, nothing measured


@pytest.mark.slow
def test_compile_equals_torch_and_pads_the_last_batch(tiny_clip, tmp_path):
    if runtimes.compiler_missing(torch.device("cpu")):
        pytest.skip("no C++ compiler for torch.compile")
    torch.manual_seed(0)
    backbone = create_backbone(f"clip:{tiny_clip}:random", precision="fp32", device="cpu")
    batches = [images(32, 4, seed=1), images(32, 3, seed=2)]
    expected = [backbone.embed(b) for b in batches]
    use_runtime(backbone, "compile", tmp_path, precision="fp32")
    for batch, reference in zip(batches, expected):
        got = backbone.embed(batch)
        assert got.shape == reference.shape and relative_difference(got, reference) <= TOLERANCE


@pytest.mark.slow
def test_predict_and_evaluate_take_the_runtime(tmp_path):
    """A model fit on torch embeddings predicts the same with onnx, for a folder and for loose files."""
    from fakedet.workflow import fit
    from fakedet.scoring import evaluate, predict

    data = write_tree(tmp_path / "data", layout_files({"train/REAL": 6, "train/FAKE": 6}, size=32))
    extract(data, "effnet-lite0", cache=tmp_path / "cache", resize="32", precision="fp32", runtime="torch",
            progress=False)
    detector = fit(cache=tmp_path / "cache", random_state=0)
    other = write_tree(tmp_path / "other", layout_files({"REAL": 2, "FAKE": 2}, size=40))
    loose = sorted(other.rglob("*.jpg"))[:2]
    tables = {rt: predict(detector, [other, *loose], cache=tmp_path / f"cache-{rt}", runtime=rt, device="cpu")
              for rt in ("torch", "onnx")}
    assert tables["onnx"]["label"].tolist() == tables["torch"]["label"].tolist()
    np.testing.assert_allclose(tables["onnx"]["p_fake"], tables["torch"]["p_fake"], atol=1e-4)
    assert (tmp_path / "cache-onnx" / "onnx").is_dir() and not (tmp_path / "cache-torch" / "onnx").exists()
    scored = evaluate(detector, other, cache=tmp_path / "cache-eval", runtime="onnx", device="cpu")
    assert Store(tmp_path / "cache-eval" / "other.h5").load(detector.key).attrs["runtime"] == "onnx"
    assert scored.metrics["n"] == 4


def test_measurements_by_machine_puts_this_machine_first(tmp_path):
    book = {"other-box": {"k1": {"rates": {"torch/fp32": 10.0}, "measured": "then", "threads": 2}},
            runtimes.machine(): {"k1": {"rates": {"torch/fp32": 20.0, "onnx/fp32": 30.0}, "measured": "now"}}}
    (tmp_path / runtimes.MEASURE_FILE).write_text(json.dumps(book))
    tables = runtimes.measurements_by_machine(tmp_path)
    assert list(tables) == ["this machine", "other-box"]
    assert tables["this machine"][["onnx/fp32", "choice"]].values.tolist() == [[30.0, "onnx/fp32"]]
    assert "threads" not in tables["this machine"] and "onnx/fp32" not in tables["other-box"]
    assert runtimes.measurements_by_machine(tmp_path / "none") == {}
