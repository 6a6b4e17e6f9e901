"""ONNX Runtime for a backbone: export once (with its feature layers and scales), cache, verify, run.

The exported graph takes the same uint8 batch as ``Backbone.embed`` and returns the same float32
features. The file lives at ``<cache folder>/onnx/<backbone key>.onnx`` and carries the backbone's
fingerprint in its metadata. A fresh export is compared with torch on a probe batch; one that
differs by more than ``TOLERANCE`` is refused with the reason (``ExportError``) and the caller
falls back to torch. A verified file gets a sidecar ``.json`` with its content hash and the
measured difference; a cached file whose bytes, fingerprint or exporter format do not match its
sidecar, or that does not load, is rebuilt, never trusted.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backbone_config import BackboneError
from .backbones import Backbone

FORMAT = "fakedet-embedder/1"  # bump when the exported graph's inputs or outputs change
OPSET = 18  # Resize with antialias (multi-scale features) needs 18
TOLERANCE = 1e-4  # max |onnx - torch| / max(1, max |torch|) on the probe batch
INSTALL = 'pip install "fakedet[onnx]"  (onnxruntime, onnx, onnxscript)'


class ExportError(BackboneError):
    """This backbone cannot run in ONNX Runtime (export failed or its output differs from torch)."""


def onnx_available() -> str | None:
    """None when onnxruntime and the exporter's dependencies import; else what is missing."""
    for module in ("onnxruntime", "onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            return module
    return None


class _Uint8Input(nn.Module):
    """uint8 (B, 3, H, W) -> features: the scaling to [0, 1] done in ``Backbone.to_input``, then the model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.float() / 255)


def onnx_path(backbone: Backbone, folder: str | Path) -> Path:
    return Path(folder) / "onnx" / f"{backbone.key}.onnx"


def require_onnx(what: str = "--runtime onnx") -> None:
    """Raise ``BackboneError`` naming the install command when the onnx extra is missing."""
    missing = onnx_available()
    if missing:
        raise BackboneError(f"{what} needs {missing}: {INSTALL}")


def write_onnx(module: nn.Module, examples: dict[str, torch.Tensor], path: str | Path, *, output: str,
               metadata: dict, opset: int = OPSET) -> Path:
    """``torch.onnx.export`` of ``module`` (inputs named as ``examples``' keys, one shared dynamic batch size,
    output ``output``) to ``path`` atomically, with ``metadata`` as string properties. The one exporter of the
    runtime's backbones and of ``fakedet export``'s deployment graphs; ``ExportError`` says why it failed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=65536)
    shapes = tuple({0: batch} for _ in examples)
    if any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values()):
        shapes = (shapes,)  # forward(*inputs): torch.export sees one argument, the tuple of inputs
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, tuple(examples.values()), input_names=list(examples), output_names=[output],
                opset_version=opset, dynamic_shapes=shapes, dynamo=True, verbose=False,
            )
    except Exception as err:  # the exporter raises many types; the message is the reason shown to the user
        raise ExportError(f"torch.onnx.export failed: {type(err).__name__}: {str(err).strip().splitlines()[0]}") from err
    program.model.metadata_props.update({k: str(v) for k, v in metadata.items()})
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    program.save(str(partial))
    os.replace(partial, path)
    return path


def export_onnx(backbone: Backbone, path: str | Path) -> Path:
    """Write ``backbone``'s fp32 feature model (layers and scales included) to ``path`` atomically."""
    require_onnx()
    model = _Uint8Input(copy.deepcopy(backbone.model).float().cpu().to(memory_format=torch.contiguous_format)).eval()
    size = backbone.preprocess.size
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    return write_onnx(model, {"images": example}, path, output="features",
                      metadata={"fakedet_fingerprint": backbone.fingerprint, "fakedet_format": FORMAT})


class OnnxRunner:
    """``runner(uint8 batch) -> float32 features`` with an onnxruntime session."""

    def __init__(self, path: str | Path, device: torch.device):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        # idle threads sleep instead of spinning, leaving the cores to the decoding workers between ops
        # (measured on 2 cores: `fakedet extract` 3-5% faster; BENCHMARKS.md, Extraction)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch.cpu().numpy())})[0]


def difference(backbone: Backbone, runner) -> float:
    """Max |runner - torch fp32| on a fixed random probe batch, relative to max(1, max |torch|)."""
    size = backbone.preprocess.size
    probe = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = backbone.model(backbone.to_input(probe)).float().cpu().numpy()
    got = runner(probe)
    if got.shape != reference.shape:
        return float("inf")
    return float(np.abs(got - reference).max() / max(1.0, float(np.abs(reference).max())))


def load_onnx(backbone: Backbone, folder: str | Path) -> OnnxRunner:
    """The verified ONNX runner for ``backbone`` (fp32), exporting or rebuilding the cached file as needed."""
    if backbone.precision != "fp32":
        raise BackboneError(f"the onnx runtime computes in fp32, not {backbone.precision}; "
                            "use --precision fp32 (or auto) with --runtime onnx, or --runtime torch")
    path = onnx_path(backbone, folder)
    if path.is_file():
        runner = _trusted(backbone, path)
        if runner is not None:
            return runner
    export_onnx(backbone, path)
    runner = OnnxRunner(path, backbone.device)
    diff = difference(backbone, runner)
    if not diff <= TOLERANCE:
        path.unlink(missing_ok=True)
        raise ExportError(f"the exported model differs from torch by {diff:.2g} (relative; tolerance {TOLERANCE:g})")
    sidecar = {"fingerprint": backbone.fingerprint, "format": FORMAT, "sha256": _sha256(path), "difference": diff,
               "torch": torch.__version__}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    return runner


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _trusted(backbone: Backbone, path: Path) -> OnnxRunner | None:
    """The cached file's runner if its sidecar vouches for these bytes and this fingerprint; else None."""
    try:
        sidecar = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    expected = {"fingerprint": backbone.fingerprint, "format": FORMAT, "sha256": _sha256(path)}
    if not isinstance(sidecar, dict) or any(sidecar.get(k) != v for k, v in expected.items()):
        return None
    try:
        runner = OnnxRunner(path, backbone.device)
    except Exception:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph on a bad file
        return None
    meta = runner.metadata
    if meta.get("fakedet_fingerprint") != backbone.fingerprint or meta.get("fakedet_format") != FORMAT:
        return None
    return runner
