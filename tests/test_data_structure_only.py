"""Structure-only Market-1501 at the real counts (~57k tiny files): manifests and verify end
to end. Slow (about 20-40 s on two cores), so in its own file."""
from __future__ import annotations

import pytest

from jlml_lib.data import load_dataset
from jlml_lib.data.manifests import load_manifest
from jlml_lib.data.synthetic import generate
from jlml_lib.data.verify import verify


@pytest.mark.slow
def test_market_structure_only_at_real_counts(tmp_path):
    generate("market1501", tmp_path, scale=1.0, seed=0, structure_only=True)
    rep = verify("market1501", tmp_path, quick=True)
    assert rep.ok, rep.problems[:5]
    man = load_manifest("market1501")["image_folders"]
    assert {k: rep.counts[k] for k in man} == {k: v["count"] for k, v in man.items()}
    ds = load_dataset("market1501", tmp_path)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (12936, 3368, 19732)
    assert ds.num_train_pids == 751
