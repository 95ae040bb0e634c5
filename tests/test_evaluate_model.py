"""``jlml evaluate`` (issue 20): a finished run's metrics reproduced exactly, the feature cache, records
that the tables never confuse with a run's own, and the cross-dataset matrix.

One tiny synthetic VIPeR run (2 iterations, 32×16 images, split 0) is trained once for the module;
every number compared here comes from it or from evaluating it again (synthetic data).
"""
from __future__ import annotations

import pytest

from jlml_lib import protocols
from jlml_lib.engine.config import make_config
from jlml_lib.evaluate_model import cross_dataset_matrix, evaluate_model, main, plot_cross_dataset_matrix
from jlml_lib.results.records import DEFAULT_VARIANT, read_metrics
from jlml_lib.results.tables import fill, scan_records, table_cells
from jlml_lib.train import run

TINY = dict(iterations=2, batch_size=8, image_height=32, image_width=16, log_every=1, ckpt_every=2,
            workers=0, progress=False, eval_batch_size=32)


@pytest.fixture(scope="module")
def viper_run(tmp_path_factory):
    """A finished run on synthetic VIPeR (scale 0.05), in a private $JLML_CACHE for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JLML_CACHE", str(tmp_path_factory.mktemp("jlml-cache")))
        run_dir = tmp_path_factory.mktemp("runs") / "viper"
        run(make_config("smoke", ["synthetic_scale=0.05"], dataset="viper", **TINY), run_dir)
        yield run_dir


def test_reproduces_the_runs_own_metrics_exactly(viper_run, tmp_path):
    res = evaluate_model(viper_run, "viper", out=tmp_path / "again", cache=False)
    own, again = read_metrics(viper_run), read_metrics(tmp_path / "again")
    assert again["metrics"] == own["metrics"]          # same features, protocol, AP convention: equal, not close
    assert again["intervals"] == own["intervals"] and again["interval_method"] == own["interval_method"]
    assert (tmp_path / "again" / "queries.npz").is_file()
    assert res["source"] == again["source"] == "synthetic"
    # the variant says what it is: this model (trained on viper) tested on viper
    assert own["variant"]["trained_on"] == "same" and again["variant"]["trained_on"] == "viper"
    assert {k: v for k, v in again["variant"].items() if k != "trained_on"} == \
        {k: v for k, v in own["variant"].items() if k != "trained_on"}
    assert again["dataset"] == "viper" and again["extra"]["tested_on"] == "viper"
    assert again["extra"]["model"]["checkpoint"].endswith("final.pt")


def test_second_evaluation_reuses_the_features(viper_run, tmp_path, monkeypatch):
    first = evaluate_model(viper_run, "viper", out=tmp_path / "a")
    assert first["cached"] is False

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted again although cached")

    monkeypatch.setattr(protocols, "feature_sets", no_extraction)
    second = evaluate_model(viper_run, "viper", out=tmp_path / "b", rerank=True, ap="standard")
    assert second["cached"] is True and set(second["metrics"]) == {"joint", "joint+rerank"}
    assert read_metrics(tmp_path / "b")["extra"]["features_cached"] is True
    assert read_metrics(tmp_path / "b" / "eval-joint-rerank")["variant"]["rerank"] is True
    # a setting that changes the features (bf16, another split's images) is a cache miss
    for other in (dict(amp="bf16"), dict(split=1)):
        with pytest.raises(AssertionError, match="extracted again"):
            evaluate_model(viper_run, "viper", write=False, **other)


def test_evaluation_records_never_take_a_table_cell(viper_run, tmp_path):
    root = tmp_path / "runs"
    evaluate_model(viper_run, "viper", out=root / "same-data")
    evaluate_model(viper_run, "grid", synthetic_scale=0.05, out=root / "cross", cache=False)
    cross = read_metrics(root / "cross")
    assert cross["dataset"] == "grid" and cross["variant"]["trained_on"] == "viper"
    assert cross["variant"] != DEFAULT_VARIANT
    records = scan_records(root)[0]
    assert len(records) == 2
    for n in (5, 6, 7, 8, 9):  # neither record fills any cell, on its own dataset or another
        assert not [c for c in fill(table_cells(n), records) if c.record is not None]
    # beside the run's own record (same numbers, older), the run keeps Table 7's cells
    own = read_metrics(viper_run)
    cells = fill(table_cells(7), records + scan_records(viper_run)[0])
    assert {c.record["run_id"] for c in cells} == {own["run_id"]}


def test_cross_dataset_matrix_and_heat_map(viper_run, tmp_path):
    frame = cross_dataset_matrix({"viper": viper_run}, {"viper": {}, "grid": {"synthetic_scale": 0.05}},
                                 out_root=tmp_path)
    assert list(frame["tested_on"]) == ["viper", "grid"] and set(frame["trained_on"]) == {"viper"}
    own = read_metrics(viper_run)["metrics"]
    diag = frame.iloc[0]                    # the diagonal: the run's own result
    assert diag["Rank-1"] == pytest.approx(100 * own["rank1"]) and diag["mAP"] == pytest.approx(100 * own["mAP"])
    assert (frame["Rank-1 low"] <= frame["Rank-1"]).all() and (frame["Rank-1"] <= frame["Rank-1 high"]).all()
    assert set(frame["source"]) == {"synthetic"}
    fig = plot_cross_dataset_matrix(frame)
    assert len(fig.axes[0].texts) == 2


def test_cli(viper_run, tmp_path, capsys):
    assert main([str(viper_run), "--dataset", "viper", "--out", str(tmp_path / "cli")]) == 0
    assert "Rank-1" in capsys.readouterr().out and (tmp_path / "cli" / "metrics.json").is_file()
    assert main([str(viper_run), "--dataset", "viper", "--protocol", "new"]) == 2
    assert "single protocol" in capsys.readouterr().err
    assert main([str(tmp_path / "nothing"), "--dataset", "viper"]) == 2
    assert "nothing" in capsys.readouterr().err


def test_feature_cache_key_takes_numpy_ids():
    """Some loaders give numpy ids/cameras: the cache key is the same as for Python ints."""
    import numpy as np
    from types import SimpleNamespace

    from jlml_lib.evaluate_model import _cache_key

    plain = SimpleNamespace(query=[("a.jpg", 1, 0)], gallery=[("b.jpg", 2, 1)], extras={})
    numpy = SimpleNamespace(query=[("a.jpg", np.int64(1), np.int64(0))], gallery=[("b.jpg", np.int64(2), np.int64(1))],
                            extras={})
    assert _cache_key("s", numpy, {"k": np.int64(3)}) == _cache_key("s", plain, {"k": 3})
