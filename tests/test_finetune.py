"""Fine-tuning: linear-probe start, training, checkpoint registered as a backbone, resume, extract, CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from click.testing import CliRunner
from conftest import layout_files, make_image, write_tree
from safetensors.torch import save_file

from fakedet import finetune as ft
from fakedet import finetune_data, finetune_probe, finetune_train, train_speed
from fakedet.finetune_run import RUN_FILES
from fakedet.catalog import run_name
from fakedet.finetuned import FORMAT, read_checkpoint
from fakedet.backbone_config import BackboneError
from fakedet.backbone_families import load_clip_model
from fakedet.backbones import create_backbone
from fakedet.feature_models import ClipFeatures, TimmFeatures
from fakedet.cli import cli
from fakedet.datasets import discover, open_source
from fakedet.decoding import decode_image
from fakedet.extract import extract
from fakedet.heads import make_head
from fakedet.metrics import binary_metrics
from fakedet.splits import assign_splits
from fakedet.store import Store, per_id

LAYOUT = {"REAL": 24, "FAKE": 24}  # 38 train, 10 val
# no augmentation: a random network is not flip- or crop-invariant, so its linear probe would not transfer
FAST = {"backbone": "timm:test_convnext", "image_size": 32, "batch_size": 16, "lr": 1e-4, "head_lr": 1e-3,
        "blur_jpeg": 0.0, "crop_scale": 1.0, "flip": False, "precision": "fp32", "device": "cpu", "workers": 0,
        "progress": False}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and OpenMP spinning stalls them on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A separable dataset, a seeded random test_convnext checkpoint, and a fine-tune run whose
    probe embeddings come from the cache; ``finetuned:<name>`` resolves under the tmp cache."""
    tmp = tmp_path_factory.mktemp("finetune")
    data = write_tree(tmp / "data", layout_files(LAYOUT, size=32))
    torch.manual_seed(0)
    weights = tmp / "convnext.safetensors"
    save_file(timm.create_model("test_convnext", pretrained=False).state_dict(), str(weights))
    cache = tmp / "cache"
    base = create_backbone("timm:test_convnext", checkpoint=weights, resize="32", precision="fp32", device="cpu")
    extract(data, base, cache=cache, workers=0, progress=False)
    result = ft.finetune(data, name="tiny", cache=cache, checkpoint=str(weights), epochs=2, **FAST)
    return {"tmp": tmp, "data": data, "weights": weights, "cache": cache, "base": base, "result": result}


def test_training_lowers_loss_and_beats_chance(setup):
    result = setup["result"]
    history = result.history
    assert [h["epoch"] for h in history] == [0, 1, 2] and result.counts == {"train": 38, "val": 10}
    assert history[0]["probe_from_cache"] == 38  # linear probe fitted on the cached embeddings
    assert history[2]["train_loss"] < history[1]["train_loss"]
    best = history[result.best_epoch]
    assert result.best_epoch in (1, 2) and best["val_loss"] == min(h["val_loss"] for h in history[1:])
    assert best["val_accuracy"] >= 0.75 and best["val_roc_auc"] > 0.8
    assert all(h["images"] == 32 and h["images_per_second"] > 0 for h in history[1:])
    for name in RUN_FILES:
        assert (result.run_dir / name).is_file(), name
    saved = json.loads((result.run_dir / "history.json").read_text())
    assert len(saved["steps"]) == 4 and saved["epochs"][-1]["epoch"] == 2  # 2 full batches per epoch
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["epochs"] == 2 and config["preprocess"]["size"] == 32 and config["precision"] == "fp32"
    assert config["train_runtime"] == "eager" and "asked for" in result.settings
    assert "best epoch" in result.summary() and "linear probe" in result.summary()


def test_checkpoint_registers_as_backbone(setup):
    result, base = setup["result"], setup["base"]
    assert result.spec == "finetuned:tiny" and result.checkpoint == setup["cache"] / "finetuned" / "tiny" / "best.pt"
    saved = read_checkpoint(result.checkpoint)
    assert saved["format"] == FORMAT and saved["base_spec"] == "timm:test_convnext"
    assert saved["preprocess"]["size"] == 32 and saved["epoch"] == result.best_epoch
    by_name = create_backbone("finetuned:tiny", precision="fp32", device="cpu", cache=setup["cache"])
    with pytest.raises(BackboneError, match="no fine-tuned checkpoint"):  # run names resolve under the given cache
        create_backbone("finetuned:tiny", precision="fp32", device="cpu", cache=setup["tmp"] / "elsewhere")
    by_path = create_backbone(str(result.checkpoint), precision="fp32", device="cpu")
    assert by_name.fingerprint == by_path.fingerprint != base.fingerprint
    assert by_name.dim == base.dim and by_name.preprocess.size == 32
    # the registered backbone + saved head reproduce the trained model's validation loss
    items = pd.read_csv(result.run_dir / "splits.csv")
    val = items[items["split"] == "val"]
    src = open_source(setup["data"])
    X = by_path.embed_images([decode_image(src.read(p)) for p in val["path"]])
    head = torch.nn.Linear(X.shape[1], 1)
    head.load_state_dict(saved["head"])
    with torch.no_grad():
        p_fake = torch.sigmoid(head(torch.from_numpy(X))).squeeze(1).numpy()
    log_loss = binary_metrics(val["label"].to_numpy(), p_fake)["log_loss"]
    assert log_loss == pytest.approx(result.history[result.best_epoch]["val_loss"], rel=1e-4)
    assert not np.allclose(X, base.embed_images([decode_image(src.read(p)) for p in val["path"]]), atol=1e-3)


def test_finetuning_a_finetune_resolves_it_in_the_cache_and_stands_alone(setup):
    """``-b finetuned:<name> --cache C`` finds the run under C (not the default cache), and the new
    checkpoint records the architecture underneath, so it loads without its parent run."""
    kw = {**FAST, "backbone": "finetuned:tiny", "image_size": 40, "epochs": 1}
    result = ft.finetune(setup["data"], name="tiny-40px", cache=setup["cache"], **kw)
    saved = read_checkpoint(result.checkpoint)
    assert saved["base_spec"] == "timm:test_convnext" and saved["base_checkpoint"] == str(setup["weights"].resolve())
    assert saved["preprocess"]["size"] == 40
    tuned = create_backbone("finetuned:tiny-40px", precision="fp32", device="cpu", cache=setup["cache"])
    parent = create_backbone("finetuned:tiny", resize="40", precision="fp32", device="cpu", cache=setup["cache"])
    assert tuned.preprocess.size == 40 and tuned.dim == parent.dim
    assert (tuned.fingerprint == parent.fingerprint) == (result.best_epoch == 0)  # the probe keeps the weights


def test_extract_stores_finetuned_embeddings_under_own_fingerprint(setup):
    out = extract(setup["data"], "finetuned:tiny", cache=setup["cache"], precision="fp32", device="cpu",
                  workers=0, progress=False)
    tuned = create_backbone("finetuned:tiny", precision="fp32", device="cpu", cache=setup["cache"])
    sets = Store(out.store).embedding_sets().set_index("key")
    assert out.key == tuned.key and out.key.startswith("finetuned_tiny.resize32-") and out.key != setup["base"].key
    assert sets.loc[out.key, "fingerprint"] == tuned.fingerprint != sets.loc[setup["base"].key, "fingerprint"]
    assert sets.loc[out.key, "count"] == sum(LAYOUT.values())
    # resize 'auto' (the preset's) embeds it at the size it was trained at, not the 128 px 32-px images would get
    auto = extract(setup["data"], "finetuned:tiny", resize="auto", cache=setup["cache"], precision="fp32",
                   device="cpu", workers=0, progress=False)
    assert auto.key == out.key and auto.note == "resize 32 (the size finetuned:tiny was fine-tuned at)"
    assert "chosen: resize 32" in auto.summary()


@pytest.mark.parametrize("variant", ["plain", "ema", "mix"])
def test_resume_continues_after_interruption(setup, monkeypatch, variant):
    ema = 0.5 if variant == "ema" else 0.0
    mix = {"mixup": 0.4, "cutmix": 1.0} if variant == "mix" else {}  # numpy draws: reseeded per epoch
    kw = {**FAST, "checkpoint": str(setup["weights"]), "epochs": 2, "cache": setup["tmp"] / "no-cache", "ema": ema,
          **mix}
    whole = ft.finetune(setup["data"], out_dir=setup["tmp"] / f"whole-{variant}", **kw)
    assert whole.history[0]["probe_from_cache"] == 0  # no cache: probe embeddings computed on the fly

    calls = []
    real_epoch = ft.train_epoch

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(ft, "train_epoch", interrupted)
    run_dir = setup["tmp"] / f"interrupted-{variant}"
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(setup["data"], out_dir=run_dir, **kw)
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 1
    calls.clear()
    np.random.seed(123)  # whatever else draws from numpy's generator in between
    resumed = ft.finetune(setup["data"], out_dir=run_dir, **kw)
    assert len(calls) == 1 and resumed.resumed_from == 1  # only epoch 2 was trained
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    a = torch.load(setup["tmp"] / f"whole-{variant}" / "last.pt", weights_only=True)
    b = torch.load(run_dir / "last.pt", weights_only=True)
    assert ("ema" in b) == bool(ema)
    for part in ("model", "ema") if ema else ("model",):  # same weights (and average) as the uninterrupted run
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert resumed.history[2]["val_loss"] == pytest.approx(whole.history[2]["val_loss"], rel=1e-6)
    again = ft.finetune(setup["data"], out_dir=run_dir, **kw)  # finished: nothing left to train
    assert len(calls) == 1 and again.resumed_from == 2
    with pytest.raises(ValueError, match=r"another configuration \(epochs: 2 -> 3\)"):
        ft.finetune(setup["data"], out_dir=run_dir, **{**kw, "epochs": 3})


def test_moving_average_is_what_is_validated_and_saved(setup):
    kw = {**FAST, "checkpoint": str(setup["weights"]), "epochs": 2, "lr": 1e-3, "cache": setup["cache"], "ema": 0.5}
    result = ft.finetune(setup["data"], out_dir=setup["tmp"] / "ema", **kw)
    last = torch.load(result.run_dir / "last.pt", weights_only=True)
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items()}
    assert any(not torch.equal(averaged[k], last["model"][k]) for k in averaged)
    items = pd.read_csv(result.run_dir / "splits.csv")
    labels = pd.Series(items["label"].to_numpy(), index=items["id"].to_numpy())
    val = items[items["split"] == "val"]
    backbone = create_backbone("timm:test_convnext", checkpoint=setup["weights"], resize="32", precision="fp32",
                               device="cpu")
    model = finetune_train.Classifier(backbone.model, backbone.dim)
    scores = {}
    for name, weights in (("averaged", averaged), ("raw", last["model"])):
        model.load_state_dict(weights)
        scores[name] = finetune_train.validate(model, backbone, open_source(setup["data"]), val, labels,
                                               workers=0, progress=False)["val_loss"]
    epoch = result.history[-1]
    assert epoch["val_loss"] == pytest.approx(scores["averaged"], rel=1e-5) != scores["raw"]
    assert epoch["raw_val_loss"] == pytest.approx(scores["raw"], rel=1e-5)
    assert "weights as trained" in result.summary()
    assert result.best_epoch == 2  # and best.pt holds the average, not the weights as trained
    saved = read_checkpoint(result.checkpoint)["backbone"]
    assert all(torch.equal(saved[k], averaged[f"features.{k}"]) for k in saved)
    with pytest.raises(ValueError, match="ema must be in"):
        ft.FinetuneConfig(ema=1.0)


def test_train_seed_keeps_the_images_and_changes_the_training(setup, tmp_path):
    kw = {**FAST, "checkpoint": str(setup["weights"]), "epochs": 1, "cache": setup["cache"]}
    first = ft.finetune(setup["data"], out_dir=tmp_path / "seed0", **kw)
    other = ft.finetune(setup["data"], out_dir=tmp_path / "train1", train_seed=1, **kw)
    assert pd.read_csv(first.run_dir / "splits.csv").equals(pd.read_csv(other.run_dir / "splits.csv"))
    a, b = (torch.load(r.run_dir / "last.pt", weights_only=True)["model"] for r in (first, other))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert json.loads((first.run_dir / "config.json").read_text())["train_seed"] == 0

    config = json.loads((first.run_dir / "config.json").read_text())  # a run from before these options
    for newer in ("ema", "train_seed", "downscale", "mixup", "cutmix", "mix_prob"):
        del config[newer]
    (first.run_dir / "config.json").write_text(json.dumps(config))
    again = ft.finetune(setup["data"], out_dir=first.run_dir, **kw)
    assert again.resumed_from == 1  # finished, not refused
    with pytest.raises(ValueError, match=r"train_seed: 0 -> 1"):
        ft.finetune(setup["data"], out_dir=first.run_dir, train_seed=1, **kw)
    with pytest.raises(ValueError, match=r"downscale: 0.0 -> 0.5"):
        ft.finetune(setup["data"], out_dir=first.run_dir, downscale=0.5, **kw)
    with pytest.raises(ValueError, match=r"cutmix: 0.0 -> 1.0"):
        ft.finetune(setup["data"], out_dir=first.run_dir, cutmix=1.0, **kw)


def test_mixing_trains_on_mixed_targets(setup, tmp_path):
    kw = {**FAST, "checkpoint": str(setup["weights"]), "cache": setup["cache"], "mixup": 0.4, "cutmix": 1.0}
    whole = ft.finetune(setup["data"], out_dir=tmp_path / "whole", epochs=2, **kw)
    steps = json.loads((whole.run_dir / "history.json").read_text())["steps"]
    plain = json.loads((setup["result"].run_dir / "history.json").read_text())["steps"]
    assert len(steps) == 4 and steps != plain  # the same images and seed, other targets
    assert all(0 < h["train_accuracy"] <= 1 for h in whole.history[1:])
    assert json.loads((whole.run_dir / "config.json").read_text())["cutmix"] == 1.0


def test_mixing_run_skips_a_corrupt_image(setup, tmp_path):
    files = layout_files(LAYOUT, size=32)
    files["FAKE/broken.jpg"] = b"\xff\xd8 not a jpeg"
    data = write_tree(tmp_path / "data", files)
    kw = {**FAST, "checkpoint": str(setup["weights"]), "cache": tmp_path / "cache", "mixup": 0.4, "cutmix": 1.0}
    result = ft.finetune(data, out_dir=tmp_path / "run", epochs=1, **kw)
    assert result.counts == {"train": 38, "val": 10}  # the broken file left out, nothing else lost
    assert "broken.jpg" not in set(pd.read_csv(result.run_dir / "splits.csv")["path"].map(lambda p: p.split("/")[-1]))


def test_batch_mix_mixes_images_and_targets_in_one_proportion():
    n = 8
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    y = torch.tensor([1.0] * (n // 2) + [0.0] * (n // 2))  # each image's partner (its reverse) has the other label
    cutmix = finetune_data.BatchMix(mixup=0.0, cutmix=1.0)
    cutmix.seed(0)
    mixed, target = cutmix(x.clone(), y.clone())
    own = (mixed == x).float().mean(dim=(1, 2, 3))  # share of each image's own pixels
    assert own.min() < 1 and torch.allclose(target[: n // 2], own[: n // 2])  # target = area of the fake image
    assert torch.allclose(target, 1 - target.flip(0))

    mixup = finetune_data.BatchMix(mixup=0.4, cutmix=0.0)
    mixup.seed(0)
    mixed, target = mixup(x.clone(), y.clone())
    lam = target[0]
    assert 0 < lam < 1 and torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0))
    mixup.seed(0)
    assert torch.equal(mixup(x.clone(), y.clone())[1], target)  # seeded

    odd = x[:7].clone()
    assert torch.equal(mixup(odd, y[:7].clone())[0], x[:7])  # an odd batch passes unmixed
    never = finetune_data.BatchMix(mixup=0.4, cutmix=1.0, prob=0.0)
    assert torch.equal(never(x.clone(), y.clone())[1], y)


def _probe_train_loss(setup, run_dir) -> float:
    """The linear probe's log loss on the run's training images, computed here from the frozen backbone."""
    items = pd.read_csv(run_dir / "splits.csv")
    train = items[items["split"] == "train"]
    src = open_source(setup["data"])
    X = setup["base"].embed_images([decode_image(src.read(p)) for p in train["path"]])
    head = finetune_probe.probe_head(X, train["label"].to_numpy(), 0)
    with torch.no_grad():
        p_fake = torch.sigmoid(head(torch.from_numpy(X))).squeeze(1).numpy()
    return binary_metrics(train["label"].to_numpy(), p_fake)["log_loss"]


def test_first_steps_never_break_the_probe(setup):
    """Default schedule, 1 epoch of 2 steps... 10 epochs of 2 steps: the loss of the first steps stays at the
    probe's (the learning rates rise from 0), where a 2-step warm-up at full rate sent it far above."""
    kw = {**FAST, "checkpoint": str(setup["weights"]), "epochs": 10, "lr": 2e-3,
          "cache": setup["cache"]}
    result = ft.finetune(setup["data"], out_dir=setup["tmp"] / "gentle", **kw)
    steps = json.loads((result.run_dir / "history.json").read_text())["steps"]
    probe = _probe_train_loss(setup, result.run_dir)
    assert result.history[0]["train_loss"] == pytest.approx(probe, rel=1e-3)
    assert len(steps) == 20 and max(steps[:6]) < probe + 0.1, (probe, steps)


def test_probe_is_the_fallback_when_training_breaks(setup):
    kw = {**FAST, "checkpoint": str(setup["weights"]), "epochs": 2, "lr": 10.0, "head_lr": 10.0,
          "warmup": 0.0, "cache": setup["cache"]}
    result = ft.finetune(setup["data"], out_dir=setup["tmp"] / "sabotaged", **kw)
    probe = result.history[0]
    assert all(h["val_loss"] > probe["val_loss"] for h in result.history[1:])  # lr 10 ruined every epoch
    assert result.best_epoch == 0 and "best.pt is the probe" in result.summary()
    saved = read_checkpoint(result.checkpoint)
    assert saved["epoch"] == 0 and saved["metrics"]["val_loss"] == probe["val_loss"]
    base = setup["base"].model.state_dict()
    assert all(torch.equal(saved["backbone"][k], base[k].cpu()) for k in base)  # the unchanged backbone
    tuned = create_backbone(str(result.checkpoint), precision="fp32", device="cpu")
    assert tuned.dim == setup["base"].dim


def test_cli_finetune(setup):
    args = ["finetune", "--data", str(setup["data"]), "--backbone", "timm:test_convnext",
            "--checkpoint", str(setup["weights"]), "--image-size", "32", "--epochs", "1", "--batch-size", "32",
            "--blur-jpeg", "0", "--precision", "fp32", "--device", "cpu", "--workers", "0",
            "--cache", str(setup["tmp"] / "cli"), "--name", "cli-run", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "best epoch 1" in result.output and (setup["tmp"] / "cli" / "finetuned" / "cli-run" / "best.pt").is_file()
    changed = CliRunner().invoke(cli, [*args, "--lr", "1e-3"])
    assert changed.exit_code == 2 and "another configuration" in changed.output and "--restart" in changed.output
    restarted = CliRunner().invoke(cli, [*args, "--lr", "1e-3", "--cutmix", "1", "--mix-prob", "0.5", "--restart"])
    assert restarted.exit_code == 0, restarted.output
    config = json.loads((setup["tmp"] / "cli" / "finetuned" / "cli-run" / "config.json").read_text())
    assert (config["lr"], config["mixup"], config["cutmix"], config["mix_prob"]) == (1e-3, 0.0, 1.0, 0.5)
    bad = CliRunner().invoke(cli, [*args, "--mix-prob", "2"])
    assert bad.exit_code == 2 and "--mix-prob" in bad.output


def test_clip_tower_with_frozen_stem(tiny_clip, tmp_path):
    data = write_tree(tmp_path / "data", layout_files({"real": 12, "fake": 12}, size=32))
    weights = tmp_path / "clip.pt"
    torch.manual_seed(0)
    torch.save(load_clip_model(f"{tiny_clip}:random").state_dict(), weights)
    kw = {**FAST, "backbone": f"clip:{tiny_clip}:{weights}", "image_size": None, "epochs": 1, "freeze": 1}
    result = ft.finetune(data, out_dir=tmp_path / "run", **kw)
    tuned = create_backbone(str(result.checkpoint), precision="fp32", device="cpu")
    base = create_backbone(kw["backbone"], precision="fp32", device="cpu")
    trunk, base_trunk = tuned.model.trunk, base.model.trunk
    assert torch.equal(trunk.conv1.weight, base_trunk.conv1.weight)  # stem frozen
    assert not torch.equal(trunk.transformer.resblocks[1].mlp.c_fc.weight,
                           base_trunk.transformer.resblocks[1].mlp.c_fc.weight)
    assert tuned.fingerprint != base.fingerprint and tuned.dim == 32


def test_layer_ids_and_param_groups(tiny_clip):
    torch.manual_seed(0)
    effnet = TimmFeatures(timm.create_model("test_efficientnet", num_classes=0), (0.5,) * 3, (0.5,) * 3, "final")
    ids = finetune_train.layer_ids(effnet)
    assert ids["conv_stem.weight"] == 0 and ids["blocks.0.0.conv.weight"] == 1
    assert ids["conv_head.weight"] == max(ids.values()) > ids["blocks.3.0.conv_pw.weight"] == 4
    clip = ClipFeatures(load_clip_model(f"{tiny_clip}:random").visual, (0.5,) * 3, (0.5,) * 3, "final")
    ids = finetune_train.layer_ids(clip)
    assert ids["conv1.weight"] == ids["positional_embedding"] == 0
    assert ids["transformer.resblocks.0.attn.in_proj_weight"] == 1
    assert ids["proj"] == ids["ln_post.weight"] == ids["transformer.resblocks.1.attn.in_proj_weight"] == 2  # neck

    model = finetune_train.Classifier(effnet, effnet.trunk.num_features)
    cfg = ft.FinetuneConfig(lr=1e-3, head_lr=1e-2, layer_decay=0.5, freeze=2, weight_decay=0.1)
    groups = finetune_train.param_groups(model, cfg)
    top = max(finetune_train.layer_ids(effnet).values())
    assert not model.features.trunk.conv_stem.weight.requires_grad  # groups 0 and 1 frozen
    assert not model.features.trunk.blocks[0][0].conv.weight.requires_grad
    by_param = {id(p): g for g in groups for p in g["params"]}
    trunk = model.features.trunk
    assert by_param[id(trunk.conv_head.weight)]["lr"] == pytest.approx(1e-3)
    assert by_param[id(trunk.blocks[1][0].conv_exp.weight)]["lr"] == pytest.approx(1e-3 * 0.5 ** (top - 2))
    assert by_param[id(trunk.bn2.weight)]["weight_decay"] == 0
    assert by_param[id(trunk.conv_head.weight)]["weight_decay"] == 0.1
    assert by_param[id(model.head.weight)]["lr"] == 1e-2
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="parameter groups"):
        finetune_train.param_groups(model, ft.FinetuneConfig(freeze=top + 1))


def test_probe_head_equals_logistic_regression():
    rng = np.random.default_rng(0)
    X = rng.normal(3, [0.01, 1, 10, 5], (200, 4)).astype(np.float32)
    y = (X[:, 1] + rng.normal(0, 1, 200) > 3).astype(int)
    head = finetune_probe.probe_head(X, y, random_state=0)
    expected = make_head("logreg", random_state=0).fit(X, y).predict_proba(X)[:, 1]
    with torch.no_grad():
        got = torch.sigmoid(head(torch.from_numpy(X))).squeeze(1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_training_items_use_the_heads_splits(tmp_path):
    data = write_tree(tmp_path / "d", layout_files({"real": 50, "fake": 50}, size=8))
    everything = per_id(discover(data, progress=False))
    split = pd.Series(assign_splits(everything)[0], index=everything["id"])
    items = finetune_data.training_items(data, progress=False)
    assert len(items) == 100 and (items["split"].to_numpy() == split.loc[items["id"]].to_numpy()).all()
    subset = finetune_data.training_items(data, limit=20, progress=False)
    assert len(subset) == 20 and (subset["split"].to_numpy() == split.loc[subset["id"]].to_numpy()).all()
    assert subset.groupby(["split", "label"]).size().to_dict() == {("train", 0): 8, ("train", 1): 8,
                                                                   ("val", 0): 2, ("val", 1): 2}
    assert subset.equals(finetune_data.training_items(data, limit=20, progress=False))  # seeded
    assert not set(subset["id"]) == set(finetune_data.training_items(data, limit=20, random_state=1, progress=False)["id"])


def test_augment_is_seeded_and_optional():
    image = make_image("smooth", (40, 30), seed=0)
    augment = finetune_data.Augment(blur_jpeg=1.0, crop_scale=0.5, flip=True)
    torch.manual_seed(0)
    a = [np.asarray(augment(image)) for _ in range(4)]
    torch.manual_seed(0)
    b = [np.asarray(augment(image)) for _ in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len({x.shape for x in a}) > 1 and all(x.shape[0] <= 30 and x.shape[1] <= 40 for x in a)
    assert all(x.size >= 0.4 * 40 * 30 * 3 for x in a)
    assert np.array_equal(np.asarray(finetune_data.Augment(0.0, 1.0, False)(image)), np.asarray(image))


def test_downscale_shrinks_within_its_range_and_draws_nothing_when_off():
    image = make_image("smooth", (40, 30), seed=0)
    torch.manual_seed(0)
    sizes = [finetune_data.Augment(0.0, 1.0, False, downscale=1.0)(image).size for _ in range(50)]
    assert all(16 <= w <= 40 and 12 <= h <= 30 for w, h in sizes) and min(w for w, _ in sizes) <= 20
    assert len(set(sizes)) > 5  # drawn per call
    torch.manual_seed(1)
    kept = sum(finetune_data.Augment(0.0, 1.0, False, downscale=0.5)(image).size == (40, 30) for _ in range(200))
    assert 60 < kept < 140  # about half untouched (plus the few draws near 1 that round back to 40 x 30)
    torch.manual_seed(0)
    torch.rand(()), torch.rand(())  # the blur and JPEG draws, all an augmentation made before --downscale
    before = torch.get_rng_state()
    torch.manual_seed(0)
    finetune_data.Augment(0.0, 1.0, False, downscale=0.0)(image)
    assert torch.equal(before, torch.get_rng_state())  # so runs from before it draw as they did


def test_warmup_rises_from_zero_over_at_least_min_steps():
    factor = finetune_train.warmup_cosine(1000, 0.1)  # 100 warm-up steps
    assert factor(0) == 0 and factor(50) == pytest.approx(0.5) and factor(100) == pytest.approx(1.0)
    assert factor(550) == pytest.approx(0.5) and factor(1000) == pytest.approx(0)
    assert all(factor(s) < factor(s + 1) for s in range(100)) and all(factor(s) >= factor(s + 1) for s in range(100, 1000))
    steps = finetune_train.warmup_steps
    assert steps(12, 0.1) == 6  # a 1,000-image, 1-epoch run: half its steps, not int(1.2) = 1 (no warm-up at all)
    assert steps(100, 0.1) == finetune_train.MIN_WARMUP and steps(10_000, 0.1) == 1000
    assert steps(100, 0.0) == 0 and finetune_train.warmup_cosine(10, 0.0)(0) == 1.0


def test_default_name_and_config_checks():
    assert run_name("clip:ViT-B-32:/x/y/w.pt", "cifake.v2") == "clip_ViT-B-32_w-cifake_v2"
    assert run_name("effnet-lite0", "cifake-train") == "effnet-lite0-cifake-train"
    for bad in ({"epochs": 0}, {"crop_scale": 0}, {"blur_jpeg": 1.5}, {"downscale": -0.1}, {"layer_decay": 0}, {"bn_stats": "x"},
                {"mixup": -1}, {"mix_prob": 1.5},
                {"train_runtime": "onnx"}):
        with pytest.raises(ValueError):
            ft.FinetuneConfig(**bad)


def test_training_step_settings_measured_once_per_machine(tmp_path, monkeypatch):
    weights = tmp_path / "convnext.safetensors"
    save_file(timm.create_model("test_convnext", pretrained=False).state_dict(), str(weights))
    backbone = create_backbone("timm:test_convnext", checkpoint=weights, resize="32", precision="fp32", device="cpu")
    calls = []
    real = train_speed.measure

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_speed, "measure", counted)
    runtime, precision, reason = train_speed.choose_training(backbone, "auto", tmp_path, free=True, batch_size=4)
    book = json.loads((tmp_path / train_speed.MEASURE_FILE).read_text())
    (rates,) = [entry["rates"] for entries in book.values() for entry in entries.values()]
    assert set(rates) == {"eager/fp32", "eager/bf16"} and all(r > 0 for r in rates.values())
    assert f"{runtime}/{precision}" == max(rates, key=rates.get) and reason.startswith("auto:") and len(calls) == 1
    assert train_speed.choose_training(backbone, "auto", tmp_path, free=True, batch_size=4)[:2] == (runtime, precision)
    assert len(calls) == 1  # cached for this machine and backbone
    assert train_speed.choose_training(backbone, "auto", tmp_path, free=False, batch_size=4)[:2] == ("eager", "fp32")
    assert backbone.precision == "fp32" and len(calls) == 1  # a precision asked for is kept, nothing measured
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    train_speed.training_step(backbone)(*train_speed.random_batch(backbone, 4))
    assert all(torch.equal(before[k], v) for k, v in backbone.model.state_dict().items())  # a copy trained
