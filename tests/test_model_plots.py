"""Notebook 02's model pictures and the stage-by-stage trace: drawn from the model, checked against
Table 1 (results/paper/table1.csv) and against sizes worked out by hand."""
import matplotlib.pyplot as plt
import pytest
import torch

from jlml_lib.complexity import layer_output_sizes, stage_name, trace_stages
from jlml_lib.model import GLOBAL_STAGES, JLML, JLMLConfig, jlml_resnet39
from jlml_lib.results import model_plots as mp
from jlml_lib.results.paper import load_paper_table

VARIANTS = [{}, {"share_local": True}, {"shared_conv1": False}, {"head": "uni"}, {"m": 3}]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "jlml")
def test_the_trace_is_the_forward_pass(kw):
    """The step-by-step walk returns what model.features returns, so it cannot drift from forward."""
    torch.manual_seed(0)
    model = jlml_resnet39(5, **kw).eval()
    x = torch.randn(2, 3, 64, 32)
    steps, joint = trace_stages(model, x)
    assert torch.equal(joint, model.features(x))
    assert steps[-1].shape == (2, 5)   # the last ID classifier
    # the walk's stage outputs agree with the forward hooks of complexity.layer_output_sizes
    hooks = layer_output_sizes(model, (64, 32))
    walked = {f"{'G' if s.branch == 'global' else 'L'}: {s.layer}": s.shape[-2:] for s in steps
              if s.layer.startswith("conv") and s.layer != "conv1"}
    assert walked == {k: v for k, v in hooks.items() if k in walked} and len(walked) == 8


def test_the_trace_leaves_the_model_in_training_mode_and_its_bn_statistics_alone():
    model = jlml_resnet39(5)
    before = model.conv1[1].running_mean.clone()
    trace_stages(model, torch.randn(1, 3, 64, 32))
    assert model.training and torch.equal(model.conv1[1].running_mean, before)


def test_table1_traced_at_224_matches_every_printed_row():
    model = jlml_resnet39(751)
    t = mp.table1_trace(model)
    paper = load_paper_table(1)
    printed = {(r.layer, r.branch) for r in paper.itertuples() if r.output_h == r.output_h}  # not NaN
    checked = t[t["match"].notna()]
    assert set(zip(checked["Table 1 row"], checked["branch"])) == printed and len(printed) == 11
    assert checked["match"].all()
    # hand: conv1 (3×3, stride 2) halves 224 -> 112; stripe j of 4 is 112/4 = 28 rows; local conv5_x
    # halves three times from 28×56: 14×28, 7×14, ceil(7/2)×7 = 4×7
    rows = t.set_index(["Table 1 row", "branch"])
    assert rows.loc[("conv1", "shared"), "output shape"] == (1, 32, 112, 112)
    assert rows.loc[("conv5_x", "local"), "H×W"] == "4×7" and rows.loc[("conv5_x", "local"), "channels"] == "4 × 256"
    # §2.3: the joint feature is the two 512-d fc rows of Table 1 side by side
    fc = paper[paper.layer == "fc"].kernel_widths.str.extract(r"/(\d+)$")[0].astype(int).sum()
    assert t[t["Table 1 row"] == "joint"]["output shape"].item() == (1, fc) == (1, 1024)


def test_table1_trace_notices_a_width_that_is_not_the_papers():
    wrong = (((32, 32, 48), 1),) + GLOBAL_STAGES[1:]   # conv2_x's output width 64 -> 48
    model = JLML(JLMLConfig(num_classes=3, global_stages=wrong))
    t = mp.table1_trace(model).set_index(["Table 1 row", "branch"])
    assert t.loc[("conv2_x", "global"), "match"] == False  # noqa: E712 (None would be "not checked")
    assert t.loc[("conv3_x", "global"), "match"] == True  # noqa: E712


@pytest.mark.parametrize("m, size, expected", [
    (4, (224, 224), [(0, 56), (56, 112), (112, 168), (168, 224)]),  # 112 conv1 rows / 4 = 28, ×2
    (3, (224, 224), [(0, 76), (76, 152), (152, 224)]),              # padded to 114: 38 rows each
    (4, (128, 64), [(0, 32), (32, 64), (64, 96), (96, 128)]),
])
def test_stripe_rows_by_hand(m, size, expected):
    assert mp.stripe_rows(jlml_resnet39(3, m=m), size) == expected


def test_figure1_is_drawn_from_the_stage_tables():
    model = jlml_resnet39(751)
    boxes = mp.figure1_boxes(model)
    text = "\n".join(b.text for b in boxes)
    for stages in (model.cfg.global_stages, model.cfg.local_stages):
        for widths, _ in stages:
            assert f"1×1,{widths[0]} 3×3,{widths[1]} 1×1,{widths[2]}" in text
    assert sum(b.key.startswith("L") and "conv" in b.key for b in boxes) == 4 * 4   # m streams × 4 stages
    assert "1024 → 512" in text and "512 → 751" in text and "1024-d" in text and "CA-4" in text
    fig = mp.plot_figure1(model)
    drawn = {t.get_text() for t in fig.axes[0].texts}
    plt.close(fig)
    assert {b.text for b in boxes} <= drawn


def test_figure1_follows_a_changed_model(tmp_path):
    cfg = JLMLConfig(num_classes=7, m=2, head="uni", blocks_per_stage=2,
                     global_stages=GLOBAL_STAGES[:3],
                     local_stages=(((8, 8, 24), 1), ((16, 16, 40), 2), ((32, 32, 72), 2)))
    model = JLML(cfg)
    boxes = mp.figure1_boxes(model, (96, 48))
    text = "\n".join(b.text for b in boxes)
    assert "1×1,32 3×3,32 1×1,72" in text and "conv4_x ×2" in text and stage_name(3) not in text
    assert "CA-2" in text and "2·72\n= 144" in text and "144 → 512" in text
    assert [b.key for b in boxes if b.kind == "classifier"] == ["joint:ID"]
    assert sum(b.kind == "local" and b.key[1].isdigit() for b in boxes) == 2 * 3
    path = tmp_path / "fig1.png"
    fig = mp.plot_figure1(model, (96, 48), path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()   # a saved figure is closed


def test_the_synthetic_person_and_its_stripes():
    img, source = mp.example_person(seed=1)
    again, _ = mp.example_person(seed=1)
    assert source == "synthetic" and img.size == (64, 128) and img.tobytes() == again.tobytes()
    model = jlml_resnet39(3)
    fig = mp.plot_stripes(model, img, source=source)
    assert len(fig.axes) == 1 + 2 * 4
    titles = [a.get_title() for a in fig.axes]
    plt.close(fig)
    assert "stripe 2: input rows 56–111" in titles and "stream 4 receives conv1 32×28×112" in titles
    assert model.training


@pytest.mark.parametrize("kw", [{}, {"shared_conv1": False}, {"head": "uni"}])
def test_parameters_by_part_add_up_to_table13s_count(kw):
    from jlml_lib.complexity import count_parameters, parameters_by_part

    model = jlml_resnet39(751, **kw)
    parts = parameters_by_part(model)
    assert sum(parts.values()) == sum(p.numel() for p in model.parameters())
    assert sum(v for k, v in parts.items() if k != "ID classifiers") == count_parameters(model)
    # by hand: W_L is (512 × 4·256) without bias, then BN's weight and bias (2 × 512)
    assert parts["local feature layer (W_L)"] == 512 * 1024 + 2 * 512
