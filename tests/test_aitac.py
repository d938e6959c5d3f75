"""AI-TAC baseline: parameter counts, length traces and behaviour against reference doc section 6."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tisfm_core.aitac import AITAC
from tisfm_core.errors import TisfmError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "immgen_sample" / "one_hot_seqs.npy"

# Length traces copied from reference doc section 6.
DOC_TRACES = {
    300: [318, 300, 100, 110, 100, 25, 31, 25, 6],
    251: [269, 251, 84, 94, 84, 21, 27, 21, 5],
}


def n_parameters(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("length,n_outputs,expected", [
    (300, 8, 3_174_908), (251, 8, 2_974_908), (251, 81, 3_047_981),
])
def test_parameter_counts(length, n_outputs, expected):
    model = AITAC(n_outputs, length=length)
    assert n_parameters(model) == expected
    # Buffers (BN running stats) are not parameters.
    assert sum(b.numel() for b in model.buffers()) > 0


def test_parameter_count_by_layer_matches_doc():
    model = AITAC(8, length=300)
    sizes = {name: n_parameters(module) for name, module in model.named_children()}
    # conv + bias + BN (weight, bias), as listed in the doc.
    assert sizes["layer1"] == 22_800 + 300 + 600
    assert sizes["layer2"] == 660_000 + 200 + 400
    assert sizes["layer3"] == 280_000 + 200 + 400
    assert sizes["fc1"] == 1200 * 1000 + 1000
    assert sizes["fc2"] == 1_001_000
    assert sizes["fc3"] == 1001 * 8


@pytest.mark.parametrize("length", [300, 251])
def test_feature_lengths_match_doc_and_real_shapes(length):
    model = AITAC(3, length=length).eval()
    assert model.feature_lengths() == DOC_TRACES[length]
    assert model.flatten_size == 200 * DOC_TRACES[length][-1]

    seen = []
    hooks = [
        module.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
        for block in (model.layer1, model.layer2, model.layer3)
        for module in block
        if isinstance(module, (nn.ConstantPad2d, nn.Conv2d, nn.MaxPool2d))
    ]
    with torch.no_grad():
        out = model(torch.zeros(2, 4, length))
    for hook in hooks:
        hook.remove()
    assert seen == DOC_TRACES[length]
    assert out.shape == (2, 3)


def test_pooling_formula_for_other_lengths():
    # floor((n + 2·pad − k)/stride) + 1 written out independently.
    def trace(length):
        out, n = [], length
        for width, pad, pool in ((19, 9, 3), (11, 5, 4), (7, 3, 4)):
            n += 2 * pad
            out.append(n)
            n = n - width + 1
            out.append(n)
            n = math.floor((n + 2 - pool) / pool) + 1
            out.append(n)
        return out

    for length in (16, 100, 500, 1000):
        model = AITAC(2, length=length, n_filters=8)
        assert model.feature_lengths() == trace(length)
        assert model.fc1.in_features == 200 * trace(length)[-1]


def test_initialisation_scales():
    torch.manual_seed(0)
    model = AITAC(8, length=300)
    conv2 = model.layer2[1].weight  # fan_in 300·11
    assert conv2.std().item() == pytest.approx(math.sqrt(2 / 3300), rel=0.02)
    for layer, gain in ((model.fc1, math.sqrt(2)), (model.fc2, math.sqrt(2)), (model.fc3, 1.0)):
        bound = gain * math.sqrt(3 / layer.in_features)
        w = layer.weight.detach().abs()
        # PyTorch's default Linear init has bound 1/sqrt(fan_in), well below these.
        assert w.max().item() <= bound and w.max().item() > 0.95 * bound


@pytest.mark.skipif(not SAMPLE.exists(), reason="shared AI-TAC sample data absent")
def test_forward_on_aitac_sample():
    x = torch.from_numpy(np.load(SAMPLE, allow_pickle=False))
    assert x.shape == (100, 4, 251)
    torch.manual_seed(0)
    model = AITAC(81, length=251)
    model.eval()
    with torch.no_grad():
        first = model(x)
        second = model(x.float())
    assert first.shape == (100, 81) and torch.isfinite(first).all()
    assert torch.equal(first, second)  # eval is deterministic; int8 input equals float input
    assert first.std() > 0

    model.train()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert not torch.equal(a, b)  # only the dropout masks differ between the two passes

    model.dropout.p = 0.0
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_input_and_option_validation():
    model = AITAC(4, length=300, n_filters=8)
    for shape in ((2, 4, 251), (2, 5, 300), (4, 300)):
        with pytest.raises(TisfmError, match="shape"):
            model(torch.zeros(shape))
    for kwargs in ({"n_outputs": 0}, {"n_outputs": 2, "length": 15}, {"n_outputs": 2, "dropout": 1.0},
                   {"n_outputs": 2, "n_filters": 2.5}):
        with pytest.raises(TisfmError):
            AITAC(**kwargs)
