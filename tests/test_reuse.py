"""A notebook's training run is reused when nothing that shapes it changed, and never deleted.

The training subprocess is replaced by a fake that writes what a finished run holds
(config.json with its data source, checkpoints/final.pt, metrics.json), so these tests check the
decision of :func:`jlml_lib.workbook.launch.train` in milliseconds; what the real subprocess does
is tested in test_train_runs.py.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from jlml_lib.paths import SET_ASIDE, RunDir, is_set_aside
from jlml_lib.workbook import launch, reuse


class FakeTraining:
    """Stands in for ``subprocess.Popen`` of the training: writes a finished run into ``--out``."""

    calls: list[list[str]] = []
    source = "synthetic"
    returncode_next = 0

    def __init__(self, cmd, **kwargs):
        FakeTraining.calls.append(list(cmd))
        out = RunDir(cmd[cmd.index("--out") + 1])
        self.returncode = FakeTraining.returncode_next
        self.stdout = iter(["iteration 1/2 loss 5.0\n"])
        if self.returncode == 0:
            out.checkpoints.mkdir(parents=True, exist_ok=True)
            out.config.write_text(json.dumps({"source": FakeTraining.source}))
            out.final.write_bytes(b"weights")
            if "evaluate=false" not in cmd:
                out.metrics.write_text(json.dumps({"run": len(FakeTraining.calls)}))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def fake(monkeypatch, tmp_path):
    FakeTraining.calls, FakeTraining.source, FakeTraining.returncode_next = [], "synthetic", 0
    monkeypatch.setattr(launch.subprocess, "Popen", FakeTraining)
    monkeypatch.setenv("JLML_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(launch.FRESH_ENV, raising=False)
    return FakeTraining


def _metrics(run: Path) -> dict:
    return json.loads(RunDir(run).metrics.read_text())


def test_same_launch_reuses_the_finished_run(fake, tmp_path, capsys):
    out = tmp_path / "runs" / "05_market"
    assert launch.train("market1501", out, iterations=2, overrides={"device": "cpu"}) == out
    saved = json.loads(RunDir(out).fingerprint.read_text())
    assert saved["sha256"] == reuse.digest(saved["inputs"]) and len(fake.calls) == 1
    capsys.readouterr()
    assert launch.train("market1501", out, iterations=2, overrides={"device": "cpu"}) == out
    assert len(fake.calls) == 1  # not trained again
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and f"reusing {out}" in said and "same options, data" in said
    assert _metrics(out) == {"run": 1} and not reuse.set_aside_copies(out)


def test_other_settings_set_the_old_run_aside_never_delete_it(fake, tmp_path, capsys):
    out = tmp_path / "run"
    launch.train("market1501", out, iterations=2)
    capsys.readouterr()
    launch.train("market1501", out, iterations=3)
    said = capsys.readouterr().out
    assert len(fake.calls) == 2
    (aside,) = reuse.set_aside_copies(out)
    assert aside.name.startswith("run" + SET_ASIDE) and is_set_aside(aside) and not is_set_aside(out)
    assert _metrics(aside) == {"run": 1} and _metrics(out) == {"run": 2}  # both kept, each whole
    assert f"kept in {aside}" in said and "changed: options (--iterations 2 -> --iterations 3)" in said


@pytest.mark.parametrize("change", ["profile", "seeds", "splits", "nproc", "override", "data_root"])
def test_every_option_enters_the_fingerprint(fake, tmp_path, change):
    base = dict(iterations=2, overrides={"sfl": True})
    changed = {"profile": {"profile": "paper"}, "seeds": {"seeds": "0,1"}, "splits": {"splits": "0,1"},
               "nproc": {"nproc": 2}, "override": {"overrides": {"sfl": False}},
               "data_root": {"data_root": str(tmp_path)}}[change]
    a = reuse.run_inputs(launch.command("viper", tmp_path / "r", **base), "viper", **_paths(base))
    opts = {**base, **changed}
    b = reuse.run_inputs(launch.command("viper", tmp_path / "r", **opts), "viper", **_paths(opts))
    assert reuse.digest(a) != reuse.digest(b)
    # the run folder and the spelling of a root do not
    c = reuse.run_inputs(launch.command("viper", tmp_path / "elsewhere", **base), "viper", **_paths(base))
    assert reuse.digest(a) == reuse.digest(c)


def _paths(opts: dict) -> dict:
    return {k: opts.get(k) for k in ("data_root", "init", "overrides")}


def test_a_root_enters_by_identity_and_synthetic_data_by_its_cache(fake, tmp_path, monkeypatch):
    (tmp_path / "data" / "viper").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    spelled = [str(tmp_path / "data" / "viper"), str(tmp_path / "data" / "viper" / ".." / "viper"),
               str(tmp_path / "link" / "viper")]
    digests = {reuse.digest(reuse.run_inputs(launch.command("viper", "r", data_root=r), "viper", data_root=r))
               for r in spelled}
    assert len(digests) == 1
    synthetic = reuse.run_inputs(launch.command("viper", "r"), "viper")
    assert synthetic["data"]["synthetic"]["cache"] == str((tmp_path / "cache" / "synthetic" / "viper").resolve())
    monkeypatch.setenv("JLML_CACHE", str(tmp_path / "other-cache"))
    assert reuse.run_inputs(launch.command("viper", "r"), "viper") != synthetic
    # a component root of the combined stage, given as an override, enters resolved too
    a = reuse.run_inputs(launch.command("cuhk03+market1501", "r", overrides={"data.cuhk03_root": spelled[1]}),
                         "cuhk03+market1501", overrides={"data.cuhk03_root": spelled[1]})
    assert a["data"]["roots"] == {"data.cuhk03_root": spelled[0]} and not any("_root" in o for o in a["options"])


def test_the_init_checkpoint_enters_by_its_bytes(fake, tmp_path, capsys):
    ckpt = tmp_path / "03" / "final.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"imagenet model A")
    assert reuse.file_sha256(ckpt) == hashlib.sha256(b"imagenet model A").hexdigest()
    out = tmp_path / "04"
    launch.train("cuhk03", out, init=str(ckpt))
    os.utime(ckpt, ns=(1, 1))  # touched, same bytes: still the same start
    launch.train("cuhk03", out, init=str(ckpt))
    assert len(fake.calls) == 1
    ckpt.write_bytes(b"imagenet model B")  # the upstream stage trained again
    capsys.readouterr()
    launch.train("cuhk03", out, init=str(ckpt))
    assert len(fake.calls) == 2 and "the --init checkpoint" in capsys.readouterr().out


def test_code_fingerprint_covers_every_python_file(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "notes.txt").write_text("not code")
    first = reuse.code_fingerprint(pkg)
    (pkg / "notes.txt").write_text("changed, still not code")
    assert reuse.code_fingerprint(pkg) == first
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert reuse.code_fingerprint(pkg) != first
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    assert reuse.code_fingerprint(pkg) == first
    (pkg / "sub" / "b.py").rename(pkg / "b2.py")  # same bytes under another name
    assert reuse.code_fingerprint(pkg) != first
    assert len(reuse.code_fingerprint()) == 64  # jlml_lib itself


def test_a_code_change_trains_again(fake, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    launch.train("grid", out)
    monkeypatch.setattr(reuse, "code_fingerprint", lambda package=None: "0" * 64)
    capsys.readouterr()
    launch.train("grid", out)
    assert len(fake.calls) == 2 and "the jlml_lib code" in capsys.readouterr().out


def test_an_unfinished_or_unfingerprinted_run_is_set_aside(fake, tmp_path, capsys):
    out = tmp_path / "run"
    RunDir(out).checkpoints.mkdir(parents=True)
    RunDir(out).last.write_bytes(b"half a run")  # killed before the end: no final.pt
    launch.train("grid", out)
    (aside,) = reuse.set_aside_copies(out)
    assert RunDir(aside).last.read_bytes() == b"half a run" and "unfinished" in capsys.readouterr().out
    RunDir(out).fingerprint.unlink()  # a finished run from before fingerprints existed
    launch.train("grid", out)
    assert len(reuse.set_aside_copies(out)) == 2 and "no fingerprint.json" in capsys.readouterr().out


def test_a_run_without_evaluation_is_finished_without_metrics(fake, tmp_path):
    out = tmp_path / "stage"
    launch.train("cuhk03+market1501", out, overrides={"evaluate": False})
    assert not RunDir(out).metrics.exists()
    launch.train("cuhk03+market1501", out, overrides={"evaluate": False})
    assert len(fake.calls) == 1


def test_fresh_trains_again_and_keeps_the_old_run(fake, tmp_path, monkeypatch):
    out = tmp_path / "run"
    launch.train("grid", out)
    launch.train("grid", out, fresh=True)
    monkeypatch.setenv(launch.FRESH_ENV, "1")  # what `jlml workbook --fresh` sets for the kernels
    launch.train("grid", out)
    assert len(fake.calls) == 3
    assert [_metrics(p) for p in reuse.set_aside_copies(out)] == [{"run": 1}, {"run": 2}]


def test_only_synthetic_set_aside_copies_are_pruned(fake, tmp_path, capsys):
    out = tmp_path / "run"
    for n in range(2, 6):  # four synthetic runs set aside in turn
        launch.train("grid", out, iterations=n)
    kept = reuse.set_aside_copies(out)
    assert [_metrics(p) for p in kept] == [{"run": 2}, {"run": 3}]  # the 2 newest; run 1 removed
    assert "a real-data run is never removed" in capsys.readouterr().out
    fake.source = "real"
    for n in range(6, 10):
        launch.train("grid", out, iterations=n)
    copies = reuse.set_aside_copies(out)
    real = [p for p in copies if reuse.run_source(p) == "real"]
    assert len(real) == 3 and len(copies) == 3 + reuse.KEEP_SYNTHETIC  # no real run ever removed


def test_a_failed_run_gets_no_fingerprint(fake, tmp_path):
    fake.returncode_next = 1
    with pytest.raises(launch.TrainingFailed, match="status 1"):
        launch.train("grid", tmp_path / "run")
    assert not RunDir(tmp_path / "run").fingerprint.exists()


def test_replace_false_and_resume_leave_the_folder_alone(fake, tmp_path):
    out = tmp_path / "run"
    launch.train("grid", out)
    launch.train("grid", out, iterations=7, replace=False)  # `jlml train` decides (it refuses)
    launch.train("grid", out, iterations=7, resume=True)    # continues the run there
    assert not reuse.set_aside_copies(out) and "--resume" in fake.calls[-1]
