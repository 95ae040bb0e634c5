"""hubconf.py (issue 20): ``torch.hub.load(repo, "jlml_resnet39", source="local", ...)`` builds the model,
or loads a checkpoint this project wrote; nothing is downloaded."""
from __future__ import annotations

import pytest
import torch

from jlml_lib.errors import ConfigError
from jlml_lib.inference import load_model
from jlml_lib.paths import REPO_ROOT
from test_inference import write_run


def test_hub_loads_a_checkpoint(tmp_path):
    run = write_run(tmp_path / "run")
    model = torch.hub.load(str(REPO_ROOT), "jlml_resnet39", source="local", checkpoint=str(run / "checkpoints" / "final.pt"))
    ref = load_model(run).model.state_dict()
    assert not model.training
    assert model.state_dict().keys() == ref.keys() and all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    # a run folder works too
    assert torch.equal(torch.hub.load(str(REPO_ROOT), "jlml_resnet39", source="local", checkpoint=str(run))
                       .global_fc_weight, ref["global_fc.0.weight"])


def test_hub_builds_a_fresh_model_and_never_downloads():
    model = torch.hub.load(str(REPO_ROOT), "jlml_resnet39", source="local", num_classes=7, head="uni")
    assert model.joint_classifier.out_features == 7 and model.global_classifier is None
    with pytest.raises(ConfigError, match="no weights are downloaded"):
        torch.hub.load(str(REPO_ROOT), "jlml_resnet39", source="local", pretrained=True)
