"""Parameter and MAC counting against hand-computed counts and torchvision's published figures."""
import pytest
import torch
from torch import nn

from jlml_lib.complexity import count_macs, count_parameters, jlml_depth, measure, torchvision_cost
from jlml_lib.model import jlml_resnet39


def test_macs_of_a_tiny_net_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    # conv: 8·8 outputs × 4 channels × (3·3·3) MACs; linear: 256·10
    assert count_macs(net, (8, 8)) == 8 * 8 * 4 * 27 + 256 * 10


def test_parameters_exclude_the_id_classifiers():
    m = jlml_resnet39(751)
    total = sum(p.numel() for p in m.parameters())
    assert count_parameters(m) == total - 2 * (512 * 751 + 751)
    assert count_parameters(m) == count_parameters(jlml_resnet39(10))  # independent of the id count


def test_jlml_row_of_table13():
    cost = measure()
    assert jlml_depth(jlml_resnet39(3)) == 39  # the "39" of JLML-ResNet39
    assert cost.streams == 5
    # Table 13: 7.2M parameters, 1.54e9 FLOPs. Ours (documented gap): 7.79M, 1.58e9 FLOPs = 2×MACs.
    assert 7.0e6 < cost.params < 8.0e6
    assert cost.flops == pytest.approx(1.54e9, rel=0.05)


def test_resnet50_matches_torchvision_published_figures():
    # torchvision's docs: ResNet-50 25.557M parameters (incl. the 2.049M fc), 4.09 GFLOPS (= GMACs)
    cost = torchvision_cost("resnet50")
    assert cost.params == 25_557_032 - (2048 * 1000 + 1000)
    assert cost.macs == pytest.approx(4.09e9, rel=0.01)


def test_table1_beside_the_paper():
    from jlml_lib.results.complexity_tables import table1

    t1 = table1(jlml_resnet39(10))
    assert t1["match"].dropna().all() and t1["match"].notna().sum() >= 10
    conv1 = t1.set_index(["layer", "branch"]).loc[("conv1", "shared")]
    assert conv1["paper output"] == conv1["measured output"] == "112×112"
