"""ShuffleNet V1/V2 models on the fused ops vs the reference models."""

from __future__ import annotations

import copy

import pytest
import torch

from shufflenet_kernels import models
from shufflenet_kernels.nn import ConvBNReLU, ShuffleV1Unit, ShuffleV2Unit
from tests.test_units import TOL, assert_state_equal, check_step, eval_close, paired, randomize, to_format

# Through a whole network of training-mode BNs, float32 rounding alone moves the
# first layers' gradients by ~5e-4 of their scale (reference fp32 vs fp64), so
# whole-model training steps are compared in float64, where they must agree closely.
F64_TOL = dict(rtol=1e-7, atol=1e-9)


def v2_pair(width: float = 0.5, num_classes: int = 10):
    return paired(lambda: models.reference_shufflenet_v2(width, num_classes),
                  lambda: models.shufflenet_v2(width, num_classes))


def v1_pair(groups: int = 3, width: float = 0.5, num_classes: int = 10):
    return paired(lambda: models.reference_shufflenet_v1(groups, width, num_classes),
                  lambda: models.shufflenet_v1(groups, width, num_classes))


@pytest.mark.parametrize("width, keys", [(0.5, 338), (1.0, 338), (1.5, 338), (2.0, 338)])
def test_v2_structure_and_keys(width, keys) -> None:
    ref = models.reference_shufflenet_v2(width)
    ours = models.shufflenet_v2(width)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert len(ours.state_dict()) == keys
    assert "stage2.0.branch1.0.weight" in ours.state_dict()
    assert "stage2.1.branch2.3.weight" in ours.state_dict()
    channels = models.V2_STAGE_CHANNELS[width]
    assert ours.stage4[-1].branch2[5].out_channels * 2 == channels[3]
    assert ours.conv5[0].out_channels == channels[4]
    assert isinstance(ours.conv1, ConvBNReLU) and isinstance(ours.conv5, ConvBNReLU)
    assert all(isinstance(u, ShuffleV2Unit) for s in (ours.stage2, ours.stage3, ours.stage4) for u in s)
    assert [len(s) for s in (ours.stage2, ours.stage3, ours.stage4)] == [4, 8, 4]


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_v1_channels_follow_paper_table(groups) -> None:
    stem, *stages = models.v1_channels(groups)
    assert stem == 24 and tuple(stages) == models.V1_STAGE_CHANNELS[groups]
    ours = models.shufflenet_v1(groups)
    assert [s[-1].conv3.out_channels for s in (ours.stage2, ours.stage3, ours.stage4)] == stages
    assert [len(s) for s in (ours.stage2, ours.stage3, ours.stage4)] == [4, 8, 4]
    assert ours.stage2[0].conv1.groups == 1 and ours.stage3[0].conv1.groups == groups
    assert all(u.conv3.groups == groups for s in (ours.stage2, ours.stage3, ours.stage4) for u in s)
    assert all(isinstance(u, ShuffleV1Unit) for s in (ours.stage2, ours.stage3, ours.stage4) for u in s)
    assert ours.stage2[0].conv2.in_channels == stages[0] // 4  # bottleneck = out / 4


def test_bad_model_arguments() -> None:
    with pytest.raises(ValueError, match="width"):
        models.shufflenet_v2(0.75)
    with pytest.raises(ValueError, match="groups"):
        models.shufflenet_v1(5)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("make", [v2_pair, v1_pair], ids=["v2-0.5", "v1-g3-0.5"])
def test_model_eval_matches_reference(make, layout) -> None:
    ref, ours = make()
    if layout == "channels_last":
        ref = ref.to(memory_format=torch.channels_last)
        ours = ours.to(memory_format=torch.channels_last)
    eval_close(ref, ours, to_format(torch.randn(2, 3, 64, 64), layout))


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_v1_groups_eval_matches_reference(groups) -> None:
    ref, ours = v1_pair(groups, 0.25)
    eval_close(ref, ours, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("make", [v2_pair, v1_pair], ids=["v2-0.5", "v1-g3-0.5"])
def test_model_training_step_matches_reference(make) -> None:
    """Gradients, running statistics, and eval outputs after an SGD step (float64)."""
    ref, ours = (m.double() for m in make())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    check_step(ref, ours, x, train=True, tol=F64_TOL)
    for model in (ref, ours):
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.01 * p.grad
    eval_close(ref, ours, x)


@pytest.mark.parametrize("make", [v2_pair, v1_pair], ids=["v2-0.5", "v1-g3-0.5"])
def test_model_float32_training_step_as_accurate_as_reference(make) -> None:
    """In float32, ours is no further from the float64 result than the float32 reference is
    (output, input gradient and every parameter gradient, as one relative error each).

    Batch 4 at 64x64, seeded: with batch 2 at 32x32 the last stage's BN normalises 2
    values per channel, so ill-conditioned that float32 rounding alone moves the gradients
    by up to 10 % and the error ratio of two float32 implementations ranges from 0.1 to 8
    with the seed; here it stays within 0.6-1.5 over seeds."""
    torch.manual_seed(0)
    ref, ours = make()
    exact = copy.deepcopy(ref).double()
    x, grad = torch.randn(4, 3, 64, 64), torch.randn(4, 10)
    results = []
    for model, dtype in ((ref, torch.float32), (ours, torch.float32), (exact, torch.float64)):
        model.train()
        xi = x.to(dtype).detach().clone().requires_grad_()
        y = model(xi)
        y.backward(grad.to(dtype))
        grads = torch.cat([p.grad.double().flatten() for p in model.parameters()])
        results.append((y.double(), xi.grad.double(), grads))

    def err(i: int, j: int) -> float:
        return (results[i][j] - results[2][j]).norm().item() / results[2][j].norm().item()

    for j, what in enumerate(("output", "input grad", "parameter grads")):
        assert err(1, j) <= 2 * err(0, j) + 1e-6, f"{what}: ours {err(1, j):.3g}, reference {err(0, j):.3g}"


def test_state_dict_round_trip() -> None:
    ref, ours = v2_pair()
    back = randomize(models.reference_shufflenet_v2(0.5, 10), seed=3)
    back.load_state_dict(ours.state_dict())
    assert_state_equal(back, ref, rtol=0, atol=0)


@pytest.mark.slow
def test_model_compiles_fullgraph() -> None:
    torch._dynamo.reset()
    ref, ours = v2_pair()
    ref.eval()
    ours.eval()
    x = torch.randn(1, 3, 32, 32)
    compiled = torch.compile(ours, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref(x), **TOL)
