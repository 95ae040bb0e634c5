"""The fault suite (issue 19): each fault a careless user or a kill can cause ends with one line
naming the culprit and a non-zero exit (or succeeds correctly), and loses or half-writes nothing.

Exit statuses are those of the console script: ``jlml_lib.cli.main`` returns what ``jlml`` exits
with (checked in-process, fast), and a few are checked through a real subprocess (argument
parsing, Ctrl-C, SIGKILL). Runs are the tiny ones of test_train.py (images written to tmp_path)
or tiny synthetic copies (tests/conftest.py).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jlml_lib import cli
from jlml_lib.data.base import MARKER, resolve_root
from jlml_lib.data.synthetic import generate
from jlml_lib.engine import checkpoint as ckpt_mod
from jlml_lib.engine.config import make_config
from jlml_lib.engine.loop import fit
from jlml_lib.errors import INTERRUPTED, USER_ERROR, ConfigError, DataError, run_cli
from jlml_lib.evaluation import rank_metrics
from jlml_lib.model import jlml_resnet39
from jlml_lib.paths import RunDir
from jlml_lib.train import run
from test_train import states_equal, tiny_cfg, tiny_items  # the tiny runs of the training tests

torch.set_num_threads(1)
pytestmark = pytest.mark.usefixtures("private_cache")  # nothing is generated in ~/.cache

REPO = Path(__file__).resolve().parents[1]
TINY = ["iterations=2", "batch_size=8", "image_height=32", "image_width=16", "log_every=1", "ckpt_every=2",
        "workers=0", "progress=false", "evaluate=false"]


def jlml(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``jlml ARGV`` (the console script's own function)."""
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str, prog: str) -> str:
    """The one line a user error prints (no traceback, nothing else on stderr)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: ") and "Traceback" not in err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}


def tiny_viper(synthetic_root, **kw) -> Path:
    return synthetic_root("viper", scale=0.05, **kw)


# ---------------------------------------------------------------- bad values: one line, exit 2, nothing written
def _stride_3x3(tmp_path: Path) -> Path:
    path = tmp_path / "stride3x3.pt"
    model = jlml_resnet39(5, stride_on="3x3")
    torch.save({"format": ckpt_mod.FORMAT, "version": ckpt_mod.VERSION, "model": model.state_dict(),
                "config": {"stride_on": "3x3"}, "num_classes": 5, "data": {}}, path)
    return path


BAD_VALUES = {
    # name: (arguments after `jlml train --out OUT`, what the line must name)
    "seeds": (["--seeds", "a,b"], "--seeds 'a,b'"),
    "splits": (["--splits", "x"], "--splits 'x'"),
    "nan": (["lr=nan"], "lr=nan"),
    "inf": (["lambda_global=inf"], "lambda_global=inf"),
    "data-option-nan": (["data.whatever=nan"], "data.whatever=nan"),
    "fp16-on-cpu": (["amp=fp16", "device=cpu"], "amp=fp16 needs CUDA"),
    "init-missing": (["--init", "{tmp}/nope.pt"], "nope.pt: checkpoint not found"),
    "init-folder": (["--init", "{tmp}"], "is a folder"),
    "init-random-bytes": (["--init", "{tmp}/random.pt"], "random.pt: not a readable checkpoint"),
    "init-stride": (["--init", "{tmp}/stride3x3.pt"], "stride_on: file '3x3', this run '1x1'"),
    "out-is-a-file": (["--out", "{tmp}/a-file"], "a-file' is a file"),
    "out-under-a-file": (["--out", "{tmp}/a-file/run"], "is a file, so the run folder cannot be made"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_value_is_one_line_before_data_or_files(case, tmp_path, capsys, private_cache):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "a-file").write_text("mine")
    _stride_3x3(tmp_path)
    args, named = BAD_VALUES[case]
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), *[a.format(tmp=tmp_path) for a in args], *TINY]
    before = snapshot(tmp_path)
    rc, stdout, err = jlml(argv, capsys)
    assert rc == USER_ERROR
    line = one_line(err, "jlml train")
    assert named.format(tmp=tmp_path) in line, line
    assert "weights_only=False" not in line           # PyTorch's advice is never repeated
    assert not out.exists() and snapshot(tmp_path) == before   # no config.json, nothing half-written
    assert not private_cache.exists()                  # refused before any data was loaded or generated


def test_print_config_never_prints_invalid_json(tmp_path, capsys):
    rc, stdout, err = jlml(["train", "--out", str(tmp_path), "--print-config", "momentum=nan"], capsys)
    assert (rc, stdout) == (USER_ERROR, "")
    assert "momentum=nan" in one_line(err, "jlml train")
    rc, stdout, _ = jlml(["train", "--out", str(tmp_path), "--print-config", "lr=0.5"], capsys)
    assert rc == 0 and json.loads(stdout)["lr"] == 0.5


def test_non_finite_settings_are_refused_by_validation():
    for over in ("lr=nan", "lr_gamma=inf", "weight_decay=-inf", "synthetic_scale=nan", "lambda_local=nan"):
        with pytest.raises(ConfigError, match="finite"):
            make_config("smoke", [over])
    with pytest.raises(ConfigError, match="momentum=-0.5"):
        make_config("smoke", ["momentum=-0.5"])


def test_unwritable_cache_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("mine")
    monkeypatch.setenv("JLML_CACHE", str(tmp_path / "a-file" / "cache"))  # (as root, chmod would not stop us)
    rc, _, err = jlml(["train", "--out", str(tmp_path / "run"), *TINY], capsys)
    assert rc == USER_ERROR
    line = one_line(err, "jlml train")
    assert str(tmp_path / "a-file") in line and "Not a directory" in line
    assert not (tmp_path / "run").exists()


def test_rank_metrics_given_strings_is_one_clear_error():
    d = np.random.default_rng(0).random((2, 3))
    ids = ([1, 2], [1, 2, 3], [0, 0], [1, 1, 1])
    with pytest.raises(DataError, match="distmat must be a numeric array.*<U"):
        rank_metrics([["a", "b", "c"]] * 2, *ids)
    with pytest.raises(DataError, match="q_pids must hold integer ids"):
        rank_metrics(d, ["a", "b"], *ids[1:])
    with pytest.raises(DataError, match="junk_pids must hold integer ids"):
        rank_metrics(d, *ids, junk_pids=["x"])


def test_the_init_refusal_holds_for_every_architecture_key(tmp_path):
    """stride_on keeps every shape (the old shape check let it through); head and a shared conv1
    into the unshared model (Tables 10, 11: the ImageNet model starts them) stay allowed."""
    path = _stride_3x3(tmp_path)
    with pytest.raises(ConfigError, match="stride_on: file '3x3'.*stride_on=3x3"):
        ckpt_mod.load_init_weights(jlml_resnet39(5), path)
    plain = tmp_path / "plain.pt"
    torch.save({"format": ckpt_mod.FORMAT, "model": jlml_resnet39(5).state_dict(), "config": {}}, plain)
    for variant in ({"head": "uni"}, {"shared_conv1": False}):
        ckpt_mod.load_init_weights(jlml_resnet39(5, **variant), plain)
        ckpt_mod.check_init(make_config("smoke", **variant), plain)
    with pytest.raises(ConfigError, match="feature_layer: file 'bn', this run 'plain'"):
        ckpt_mod.check_init(make_config("smoke", feature_layer="plain"), plain)


# ---------------------------------------------------------------- the handler itself
def test_handler_user_errors_bugs_debug_and_ranks(capsys, monkeypatch):
    def raising(exc):
        def body():
            raise exc
        return body

    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/.last.pt.1.tmp")
    assert run_cli("jlml train", raising(full)) == USER_ERROR
    line = one_line(capsys.readouterr().err, "jlml train")
    assert "/runs/x/checkpoints/.last.pt.1.tmp" in line and "disk is full" in line
    with pytest.raises(ZeroDivisionError):                       # a bug keeps its traceback
        run_cli("jlml train", raising(ZeroDivisionError("bug")))
    worker = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                       "call last):\n  File \"x.py\", line 1\njlml_lib.errors.DataError: /d/1.jpg: not readable")
    assert run_cli("jlml train", raising(worker)) == USER_ERROR
    assert one_line(capsys.readouterr().err, "jlml train") == "jlml train: /d/1.jpg: not readable"
    monkeypatch.setenv("RANK", "3")                              # torchrun: rank 0 speaks for a setting
    assert run_cli("jlml train", raising(ConfigError("lr=nan"))) == USER_ERROR
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("JLML_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_cli("jlml train", raising(ConfigError("lr=nan")))


def test_ctrl_c_names_the_checkpoint_to_resume(tmp_path, capsys):
    from jlml_lib.engine.cli import resume_hint

    def interrupt():
        raise KeyboardInterrupt

    out = tmp_path / "run"
    assert run_cli("jlml train", interrupt, interrupted=lambda: resume_hint(out)) == INTERRUPTED
    assert "no checkpoint had been written" in capsys.readouterr().err
    last = RunDir(out / "seed-01").last
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert run_cli("jlml train", interrupt, interrupted=lambda: resume_hint(out)) == INTERRUPTED
    assert f"--resume continues from {last}" in one_line(capsys.readouterr().err, "jlml train")


def test_subprocess_exit_code_and_one_line(tmp_path):
    """The console script's path as a process: python -m jlml_lib.cli (what `jlml` runs)."""
    p = subprocess.run([sys.executable, "-m", "jlml_lib.cli", "train", "--out", str(tmp_path / "r"), "--seeds", "a,b"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == USER_ERROR, p.stderr
    assert "--seeds 'a,b'" in one_line(p.stderr, "jlml train")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- data: never written over, never misread
def test_generate_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    real = tmp_path / "datasets"
    query = real / "Market-1501-v15.09.15" / "query"
    query.mkdir(parents=True)
    (query / "0001_c1s1_001051_00.jpg").write_bytes(b"the user's image")
    before = snapshot(real)
    rc, _, err = jlml(["data", "generate", "market1501", str(real), "--scale", "0.01"], capsys)
    assert rc == USER_ERROR and "not written by jlml" in one_line(err, "jlml data generate")
    assert snapshot(real) == before and not (real / MARKER).exists()
    # a generated copy beside a real one (its marker lists only cuhk03): the real one is refused too
    generate("cuhk03", real.parent / "mixed", scale=0.02, structure_only=True)
    (real.parent / "mixed" / "Market-1501-v15.09.15").mkdir()
    with pytest.raises(ConfigError, match="Market-1501-v15.09.15 exists and was not written by jlml"):
        generate("cuhk03+market1501", real.parent / "mixed", scale=0.02, structure_only=True)
    # onto a file: one line, the file untouched
    (tmp_path / "f").write_text("mine")
    rc, _, err = jlml(["data", "generate", "viper", str(tmp_path / "f")], capsys)
    assert rc == USER_ERROR and "is a file" in one_line(err, "jlml data generate")
    assert (tmp_path / "f").read_text() == "mine"
    # its own folder again: regenerated, as before
    generate("viper", tmp_path / "own", scale=0.02, structure_only=True)
    generate("viper", tmp_path / "own", scale=0.02, structure_only=True)


def test_a_copy_lacking_one_folder_is_named_inside_that_copy(tmp_path):
    copy = tmp_path / "Market-1501-v15.09.15"
    for part in ("bounding_box_train", "bounding_box_test"):
        (copy / part).mkdir(parents=True)
    with pytest.raises(DataError) as err:
        resolve_root("market1501", tmp_path)
    msg = str(err.value)
    assert f"{str(copy)!r} looks like the dataset but lacks ['query']" in msg
    assert "bounding_box_train" not in msg.split("(expected")[0]     # not "every folder is missing"


# ---------------------------------------------------------------- kills and resumes
def _log_iterations(folder: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in RunDir(folder).log.read_text().splitlines()]


class Kill(Exception):
    pass


def _kill_at(n: int):
    def hook(done, model):
        if done == n:
            raise Kill()
    return hook


def test_kill_before_the_first_checkpoint_then_resume_logs_each_iteration_once(tmp_path, synthetic_root):
    cfg = make_config("smoke", TINY + ["iterations=4", "ckpt_every=100"],
                      dataset="viper", data_root=str(tiny_viper(synthetic_root)))
    with pytest.raises(Kill):
        run(cfg, tmp_path, on_iteration=_kill_at(3))
    assert _log_iterations(tmp_path) == [1, 2] and not RunDir(tmp_path).last.exists()
    run(cfg, tmp_path, resume=True)
    assert _log_iterations(tmp_path) == [1, 2, 3, 4]


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_then_resume(tmp_path):
    """A real SIGKILL inside torch.save leaves a temporary file (no cleanup runs); the next start
    removes it, and the resumed weights equal an uninterrupted run's."""
    images = tmp_path / "images"
    images.mkdir()
    items = tiny_items(images)
    script = f"""
import os, signal, sys, torch
sys.path.insert(0, {str(REPO / 'tests')!r})
from test_train import tiny_cfg
from jlml_lib.engine.loop import fit
items = {items!r}
real_save = torch.save
def dying_save(obj, fh, *a, **k):
    if obj["iteration"] == 4:
        fh.write(b"half a checkpoint")
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, fh, *a, **k)
torch.save = dying_save
torch.set_num_threads(1)
fit(tiny_cfg(), items, 6, {str(tmp_path / 'b')!r})
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    ckpts = RunDir(tmp_path / "b").checkpoints
    stale = [n for n in os.listdir(ckpts) if n.endswith(".tmp")]
    assert stale and ckpt_mod.load_checkpoint(ckpts / "last.pt")["iteration"] == 2
    resumed = fit(tiny_cfg(), items, 6, tmp_path / "b", resume=True)
    assert sorted(os.listdir(ckpts)) == ["last.pt"]             # the stale file is gone
    straight = fit(tiny_cfg(), items, 6, tmp_path / "a")
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict()) == []
    assert _log_iterations(tmp_path / "b") == [2, 4, 6]


def test_resume_with_other_data_is_refused_before_anything_is_written(tmp_path, capsys, synthetic_root):
    root = tmp_path / "copy"
    generate("viper", root, scale=0.05, seed=0)
    out = tmp_path / "run"
    base = ["train", "--dataset", "viper", "--out", str(out)]
    assert jlml([*base, "--data-root", str(root), *TINY], capsys)[0] == 0
    # another root
    other = tiny_viper(synthetic_root, seed=1)
    before = snapshot(out)
    rc, _, err = jlml([*base, "--resume", "--data-root", str(other), *TINY, "iterations=4"], capsys)
    assert rc == USER_ERROR and "data_root: saved" in one_line(err, "jlml train")
    assert snapshot(out) == before
    # the same root, spelled otherwise: the same run
    assert jlml([*base, "--resume", "--data-root", f"{tmp_path}/./copy", *TINY], capsys)[0] == 0
    before = snapshot(out)
    # the same root holding other data now (another copy put in its place)
    shutil.rmtree(root)
    generate("viper", root, scale=0.1, seed=0)
    rc, _, err = jlml([*base, "--resume", "--data-root", str(root), *TINY, "iterations=4"], capsys)
    assert rc == USER_ERROR and "num_train_pids: saved" in one_line(err, "jlml train")
    assert snapshot(out) == before                                # config.json, log, checkpoints as they were


def test_data_error_mid_training_saves_the_last_iteration_first(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    items = tiny_items(images)
    cfg = tiny_cfg(ckpt_every=100)

    def break_images(done, model):  # an unreadable image met after iteration 3
        if done == 3:
            for ref, _, _ in items:
                Path(ref).write_bytes(b"not an image")

    with pytest.raises(DataError, match=r"not a readable image.*saved .*last.pt at iteration 3.*--resume"):
        fit(cfg, items, 6, tmp_path / "b", on_iteration=break_images)
    assert ckpt_mod.load_checkpoint(RunDir(tmp_path / "b").last)["iteration"] == 3
    tiny_items(images)  # the images replaced: the same files again
    resumed = fit(cfg, items, 6, tmp_path / "b", resume=True)
    straight = fit(cfg, items, 6, tmp_path / "a")
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict()) == []


@pytest.mark.slow
def test_ctrl_c_in_a_real_run_ends_with_one_line_and_130(tmp_path, synthetic_root):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jlml_lib.train", "--dataset", "viper", "--data-root",
           str(tiny_viper(synthetic_root)), "--out", str(out), *TINY, "iterations=100000", "ckpt_every=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not RunDir(out).last.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == INTERRUPTED, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("jlml train: interrupted") and f"--resume continues from {RunDir(out).last}" in last
    assert ckpt_mod.load_checkpoint(RunDir(out).last)["iteration"] >= 1
