"""Commands that ship a model: explain, export, serve."""
from __future__ import annotations

from pathlib import Path

import click

from . import DEVICE, cache_option, checkpoint_option, cli


@cli.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="folder for <image>.png (overlay) and <image>.npy (map)")
@click.option("--method", type=click.Choice(["auto", "grad-cam", "occlusion"]), default="auto",
              help="auto: Grad-CAM for logreg/linsvm/mlp heads, occlusion (a surrogate) for the others")
@checkpoint_option("the backbone's original weights file, when the model was fit on local weights")
@DEVICE
@cache_option
def explain(model, images, out, method, checkpoint, device, cache):
    """Heat maps of what drove P(fake) for IMAGES (files) with MODEL (folder or name)."""
    from ..catalog import find_model
    from ..detector import Detector
    from ..explain import explain_files
    from ..scoring import backbone_for, set_models

    detector = Detector.load(find_model(model, cache))
    set_models(detector, "heat maps")  # refuses what has no maps before any backbone is built
    table = explain_files(detector, list(images), out, backbone_for(detector, checkpoint, device, cache), method)
    click.echo(table.drop(columns=["npy"]).to_csv(index=False), nl=False)
    click.echo(f"{table['png'].notna().sum()} heat maps in {out}: {', '.join(table['method'].dropna().unique())}",
               err=True)


@cli.command()
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="file to write, e.g. model.onnx")
@click.option("--check", type=click.IntRange(0), default=100,
              help="compare P(fake) of the file and PyTorch on N images (0: skip)")
@click.option("--check-data", type=click.Path(exists=True, path_type=Path), default=None,
              help="folder or zip to take the --check images from [default: generated images]")
@checkpoint_option("the backbone's original weights file, when the model was fit on local weights")
@cache_option
def export(model, fmt, out, check, check_data, checkpoint, cache):
    """Write MODEL (backbone + head; every set's of a stacked fused model) as one ONNX graph: preprocessed
    batch(es) in [0, 1] -> P(fake)."""
    from ..catalog import find_model
    from ..detector import Detector
    from ..export import check_exportable, describe_inputs, export_onnx, onnx_inputs, onnx_parity, probe_images
    from ..scoring import backbone_for

    detector = Detector.load(find_model(model, cache))
    check_exportable(detector)  # before building any backbone
    backbone = backbone_for(detector, checkpoint, device="cpu", cache=cache)
    path = export_onnx(detector, out, backbone)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); {describe_inputs(onnx_inputs(detector, backbone)[0])}; "
               f"output p_fake (B,), threshold {detector.threshold:.4f}")
    if check:
        parity = onnx_parity(detector, path, probe_images(check, check_data), backbone)
        click.echo(f"parity on {parity['n']} {'images of ' + str(check_data) if check_data else 'generated images'}: max |dP| {parity['max_abs_diff']:.2e}, "
                   f"mean {parity['mean_abs_diff']:.2e}")


@cli.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 exposes it)")
@click.option("--port", type=click.IntRange(0, 65535), default=8000)
@checkpoint_option("the backbone's original weights file, when the model was fit on local weights")
@DEVICE
@cache_option
def serve(model, host, port, checkpoint, device, cache):
    """A web page and JSON API (/docs) for MODEL: verdicts, heat maps, nearest training images."""
    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as err:
        raise click.UsageError(f"serve needs the serve extra: pip install 'fakedet[serve]' ({err})") from err
    from ..catalog import find_model
    from ..detector import Detector

    detector = Detector.load(find_model(model, cache))
    uvicorn.run(create_app(detector, checkpoint=checkpoint, device=device), host=host, port=port)
