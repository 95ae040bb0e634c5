"""The training loop on CPU: resume equivalence, atomic checkpoints, non-finite stop, AMP paths,
--init, and the CLI's errors. A tiny image set written to tmp_path stands in for a dataset."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jlml_lib.engine import checkpoint as ckpt_mod
from jlml_lib.engine.checkpoint import load_checkpoint, load_init_weights
from jlml_lib.engine.config import make_config
from jlml_lib.engine.loop import NonFiniteLoss, fit
from jlml_lib.errors import ConfigError
from jlml_lib.model import jlml_resnet39
from jlml_lib.paths import RunDir
from jlml_lib.train import main as train_main

torch.set_num_threads(1)  # the machine is shared; 1 thread also keeps CPU results reproducible


def tiny_items(root: Path, ids: int = 6, per_id: int = 4) -> list[tuple[str, int, int]]:
    """ids × per_id small RGB images, each identity a colour (rows differ so flips matter)."""
    rng = np.random.default_rng(0)
    items = []
    for pid in range(ids):
        base = rng.integers(0, 255, size=(1, 1, 3))
        for k in range(per_id):
            arr = np.clip(base + rng.integers(-30, 30, size=(32, 16, 3)) + np.arange(16)[None, :, None] * 4, 0, 255)
            path = root / f"{pid:02d}_{k}.png"
            Image.fromarray(arr.astype(np.uint8)).save(path)
            items.append((str(path), pid, k % 2))
    return items


def tiny_cfg(**over):
    base = dict(iterations=6, batch_size=8, image_height=32, image_width=16, lr_step=4, log_every=2,
                ckpt_every=2, workers=0, progress=False, evaluate=False)
    return make_config("smoke", **{**base, **over})


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return tiny_items(tmp_path_factory.mktemp("imgs"))


def states_equal(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


class Kill(Exception):
    pass


def test_resume_after_kill_gives_identical_weights(items, tmp_path):
    cfg = tiny_cfg()
    straight = fit(cfg, items, 6, tmp_path / "a")

    def kill_at_5(done, model):
        if done == 5:  # after the checkpoint of iteration 4, before the one of 6: work is lost
            raise Kill()

    with pytest.raises(Kill):
        fit(cfg, items, 6, tmp_path / "b", on_iteration=kill_at_5)
    assert load_checkpoint(RunDir(tmp_path / "b").last)["iteration"] == 4
    resumed = fit(cfg, items, 6, tmp_path / "b", resume=True)
    assert resumed.iteration == 6
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict()) == []
    # momentum buffers too: a further iteration from either checkpoint would also agree
    oa = load_checkpoint(RunDir(tmp_path / "a").last)["optimizer"]["state"]
    ob = load_checkpoint(RunDir(tmp_path / "b").last)["optimizer"]["state"]
    assert all(torch.equal(oa[k]["momentum_buffer"], ob[k]["momentum_buffer"]) for k in oa)
    # the log was cut back to the checkpoint and continued: one line per log step, in order
    its = [json.loads(l)["iteration"] for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert its == [2, 4, 6]
    # and training did something (equality is not the trivial "nothing moved")
    torch.manual_seed(cfg.seed)  # the initial weights fit() starts from
    fresh = cfg.build_model(6).state_dict()
    assert states_equal(fresh, straight.model.state_dict())


def test_loss_terms_logged(items, tmp_path):
    fit(tiny_cfg(iterations=2), items, 6, tmp_path)
    (line,) = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert set(line) >= {"iteration", "total", "global_ce", "local_ce", "global_reg", "local_reg", "lr",
                         "images_per_s", "wall_time_s"}
    assert line["total"] == pytest.approx(line["global_ce"] + line["local_ce"] + line["global_reg"]
                                          + line["local_reg"], rel=1e-5)
    assert line["global_ce"] == pytest.approx(np.log(6), abs=1.0)  # ~uniform logits at the start
    assert line["lr"] == 0.01


def test_checkpoint_never_half_written(items, tmp_path, monkeypatch):
    cfg = tiny_cfg(iterations=4)
    fit(cfg, items, 6, tmp_path)
    path = RunDir(tmp_path).last
    before = path.read_bytes()

    def broken_save(obj, fh, *a, **k):
        fh.write(b"partial garbage")        # a kill in the middle of writing
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_cfg(iterations=6), items, 6, tmp_path, resume=True)
    assert path.read_bytes() == before                               # the old file is intact
    assert sorted(os.listdir(path.parent)) == ["last.pt"]             # no temp file left behind
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 4


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(items, tmp_path):
    def poison(done, model):
        if done == 3:
            with torch.no_grad():
                model.global_fc_weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLoss, match=r"iteration 4 .*last good checkpoint .*last.pt"):
        fit(tiny_cfg(), items, 6, tmp_path, on_iteration=poison)
    ck = load_checkpoint(RunDir(tmp_path).last)
    assert ck["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_bf16_autocast_and_channels_last_run_on_cpu(items, tmp_path):
    cfg = tiny_cfg(iterations=2, amp="bf16", channels_last="on", ckpt_every=100)
    res = fit(cfg, items, 6, tmp_path)
    assert np.isfinite(res.last_log["total"])
    assert res.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_fp16_needs_cuda(items, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="CUDA"):
        fit(tiny_cfg(amp="fp16"), items, 6, tmp_path)


def test_sync_bn_needs_cuda(items, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="sync_bn=on needs CUDA"):
        fit(tiny_cfg(sync_bn="on"), items, 6, tmp_path)


def test_eval_normalize_gives_unit_features():
    from jlml_lib.engine.evaluate import _Normalised

    torch.manual_seed(0)
    model = jlml_resnet39(5).eval()
    x = torch.randn(3, 3, 32, 16)
    for kind in ("joint", "global", "local"):
        raw, unit = model.features(x, kind), _Normalised(model).features(x, kind)
        assert torch.allclose(unit.norm(dim=1), torch.ones(3), atol=1e-5)
        assert torch.allclose(unit * raw.norm(dim=1, keepdim=True), raw, atol=1e-4)


def test_freeze_bn_keeps_running_stats(items, tmp_path):
    res = fit(tiny_cfg(iterations=2, freeze_bn=True, lr=1e-4), items, 6, tmp_path)
    bn = res.model.conv1[1]
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.equal(bn.weight, torch.ones_like(bn.weight))   # affine parameters still train


def test_init_loads_backbone_and_drops_classifiers(tmp_path):
    torch.manual_seed(1)
    src = jlml_resnet39(1000)                 # e.g. the ImageNet pre-training model
    torch.save({"model": src.state_dict(), "format": ckpt_mod.FORMAT}, tmp_path / "pre.pt")
    torch.manual_seed(2)
    dst = jlml_resnet39(7)
    fresh_cls = dst.global_classifier.weight.clone()
    info = load_init_weights(dst, tmp_path / "pre.pt")
    assert "global_classifier.weight" in info["skipped"]
    for k, v in dst.state_dict().items():
        if k.startswith(ckpt_mod.CLASSIFIER_PREFIXES):
            continue
        assert torch.equal(v, src.state_dict()[k]), k
    assert dst.global_classifier.weight.shape == (7, 512)
    assert torch.equal(dst.global_classifier.weight, fresh_cls)


def test_init_of_the_unshared_variant_copies_the_shared_conv1(tmp_path):
    """Table 11's "without shared feature" model starts both first convs from the pre-trained conv1."""
    torch.manual_seed(1)
    src = jlml_resnet39(1000)
    torch.save({"model": src.state_dict(), "format": ckpt_mod.FORMAT}, tmp_path / "pre.pt")
    dst = jlml_resnet39(7, shared_conv1=False)
    info = load_init_weights(dst, tmp_path / "pre.pt")
    assert "local_conv1.0.weight" in info["copied"]
    for key, value in src.conv1.state_dict().items():
        assert torch.equal(dst.local_conv1.state_dict()[key], value)
        assert torch.equal(dst.conv1.state_dict()[key], value)


def test_init_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.pt.*not found"):
        load_init_weights(jlml_resnet39(5), tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pt.*not a readable"):
        load_init_weights(jlml_resnet39(5), tmp_path / "junk.pt")
    torch.save(jlml_resnet39(5, shared_conv1=False).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="other.pt.*do not fit.*shared_conv1"):
        load_init_weights(jlml_resnet39(5), tmp_path / "other.pt")


# ---------------------------------------------------------------- CLI
def test_cli_unknown_override(capsys, tmp_path):
    assert train_main(["--out", str(tmp_path), "colour=red"]) == 2
    err = capsys.readouterr().err
    assert "colour" in err and "valid keys" in err and "lr" in err


def test_cli_print_config(capsys, tmp_path):
    from jlml_lib.cli import main as jlml_main

    assert jlml_main(["train", "--profile", "paper", "--out", str(tmp_path), "--iterations", "300",
                      "--print-config", "sfl=false"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["iterations"], cfg["lr_step"], cfg["sfl"], cfg["image_height"]) == (300, 20000, False, 224)


def test_cli_refuses_to_overwrite_and_checks_resume_settings(items, tmp_path, capsys, monkeypatch):
    # a run folder with a checkpoint: starting again without --resume is refused; resuming with
    # a different LR is refused (it would not be the same run)
    fit(tiny_cfg(iterations=2), items, 6, tmp_path)
    assert train_main(["--out", str(tmp_path), "evaluate=false"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert train_main(["--out", str(tmp_path), "--resume", "lr=0.5", "iterations=6", "batch_size=8",
                       "image_height=32", "image_width=16", "lr_step=4"]) == 2
    err = capsys.readouterr().err
    assert "lr: saved 0.01, now 0.5" in err
