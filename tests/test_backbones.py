"""ResNet backbone: torchvision key compatibility, checkpoint loading, strides, freezing, style."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nassearch.detectors.backbones import ResNet, build_backbone, load_pretrained
from nassearch.errors import NasSearchError

FIXTURES = Path(__file__).parent / "fixtures"


pytestmark = pytest.mark.usefixtures("one_thread")


def torchvision_keys(arch: str) -> dict:
    """Fixture made from torchvision 0.28.0's resnet.py (see its "source" field)."""
    return json.loads((FIXTURES / f"torchvision_{arch}_keys.json").read_text())


def fake_checkpoint(arch: str, seed: int, with_buffers_count: bool = True) -> dict:
    """Random tensors with torchvision's state-dict keys and shapes, fc and BN counters included."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in torchvision_keys(arch)["state_dict"]:
        if key.endswith("num_batches_tracked"):
            if with_buffers_count:
                sd[key] = torch.tensor(int(torch.randint(1, 1000, (), generator=g)))
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g)
    return sd


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.fixture
def no_conv_init(monkeypatch):
    """Skip the kaiming init (seconds for ResNet-101 on CPU) in tests that only check structure."""
    monkeypatch.setattr(nn.init, "kaiming_normal_", lambda t, **kwargs: t)


@pytest.mark.parametrize(
    ("depth", "arch"), [(18, "resnet18"), (50, "resnet50"), (101, "resnet101")]
)
def test_state_dict_keys_and_shapes_match_torchvision(depth, arch, no_conv_init):
    ref = [(k, v) for k, v in torchvision_keys(arch)["state_dict"] if not k.startswith("fc.")]
    model = ResNet(depth, out_indices=(1, 2, 3, 4))
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == ref


@pytest.mark.parametrize(
    ("depth", "params_without_fc"),
    [
        # torchvision meta num_params minus fc (512*1000+1000 or 2048*1000+1000)
        (18, 11_689_512 - 513_000),
        (34, 21_797_672 - 513_000),
        (50, 25_557_032 - 2_049_000),
        (101, 44_549_160 - 2_049_000),
        # stem 9408+128; per stage conv3x3s + BNs (+ 1x1 downsample + BN from stage 2 on)
        (10, 9_536 + 73_984 + 230_144 + 919_040 + 3_673_088),
    ],
)
def test_param_counts(depth, params_without_fc, no_conv_init):
    model = ResNet(depth)
    assert sum(p.numel() for p in model.parameters()) == params_without_fc


@pytest.mark.parametrize(
    ("arch", "without_fc"),
    [("resnet18", 11_176_512), ("resnet50", 23_508_032), ("resnet101", 42_500_160)],
)
def test_fixture_param_counts_agree_with_torchvision_meta(arch, without_fc):
    fx = torchvision_keys(arch)
    assert "torchvision" in fx["source"]
    params = {
        k: torch.Size(s).numel()
        for k, s in fx["state_dict"]
        if "running_" not in k and "num_batches" not in k
    }
    assert sum(params.values()) == fx["num_params"] == fx["num_params_meta"]
    fc = params["fc.weight"] + params["fc.bias"]
    assert fx["num_params"] - fc == without_fc


def _wrap(sd: dict, how: str):
    if how == "state_dict":
        return {"state_dict": sd, "epoch": 3}
    if how == "model":
        return {"model": sd, "optimizer": {"lr": 0.1}}
    if how == "module":
        return {f"module.{k}": v for k, v in sd.items()}
    return sd


@pytest.mark.parametrize("how", ["plain", "state_dict", "model", "module"])
def test_load_pretrained_resnet18_checkpoint(tmp_path, how):
    sd = fake_checkpoint("resnet18", seed=0)
    path = tmp_path / "r18.pth"
    torch.save(_wrap(sd, how), path)
    model = ResNet(18)
    report = load_pretrained(model, path)
    own = model.state_dict()
    for k, v in sd.items():
        if k.startswith("fc."):
            assert k not in own
        else:
            assert torch.equal(own[k], v), k
    assert report["ignored"] == ["fc.bias", "fc.weight"]
    assert report["loaded"] == len(sd) - 2
    # the loaded values drive the forward pass (eval BN uses the loaded running stats)
    model.eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = F.conv2d(x, sd["conv1.weight"], stride=2, padding=3)
    ref = F.batch_norm(
        ref, sd["bn1.running_mean"], sd["bn1.running_var"], sd["bn1.weight"], sd["bn1.bias"]
    )
    torch.testing.assert_close(model.bn1(model.conv1(x)), ref)


def test_load_pretrained_resnet50_without_batch_counters(tmp_path):
    # torchvision's original ImageNet files have no num_batches_tracked buffers
    sd = fake_checkpoint("resnet50", seed=2, with_buffers_count=False)
    path = tmp_path / "r50.pth"
    torch.save(sd, path)
    model = build_backbone(50, weights=str(path), out_indices=(1, 2, 3, 4))
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in sd.items() if not k.startswith("fc."))
    assert own["layer4.2.bn3.running_var"].shape == (2048,)


def _error(model, path) -> str:
    with pytest.raises(NasSearchError) as info:
        load_pretrained(model, path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_load_pretrained_errors(tmp_path):
    model = ResNet(18)
    base = {k: v for k, v in fake_checkpoint("resnet18", seed=3).items() if not k.startswith("fc.")}

    assert "not found" in _error(model, tmp_path / "nope.pth")

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    assert "cannot read" in _error(model, garbage)

    as_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], as_list)
    assert "not a state dict" in _error(model, as_list)

    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in base.items() if not k.startswith("layer4.1.")}, missing)
    msg = _error(model, missing)
    assert "missing" in msg and "layer4.1.conv1.weight" in msg and "(10 in all)" in msg

    extra = tmp_path / "extra.pth"
    torch.save({**base, "layer5.0.conv1.weight": torch.zeros(3)}, extra)
    msg = _error(model, extra)
    assert "unexpected" in msg and "layer5.0.conv1.weight" in msg and "(1 in all)" in msg

    shape = tmp_path / "shape.pth"
    torch.save({**base, "layer2.0.conv2.weight": torch.zeros(128, 128, 1, 1)}, shape)
    msg = _error(model, shape)
    assert (
        "layer2.0.conv2.weight" in msg and "[128, 128, 1, 1]" in msg and "[128, 128, 3, 3]" in msg
    )


@pytest.mark.parametrize(("depth", "widths"), [(10, [64, 128, 256, 512]), (18, [64, 128, 256, 512]),
                                               (50, [256, 512, 1024, 2048])])  # fmt: skip
def test_output_strides_and_channels(depth, widths):
    model = ResNet(depth, out_indices=(1, 2, 3, 4)).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert model.out_strides == [4, 8, 16, 32]
    assert model.out_channels == widths
    assert [tuple(f.shape) for f in feats] == [
        (1, c, 64 // s, 96 // s) for c, s in zip(widths, [4, 8, 16, 32], strict=True)
    ]
    default = ResNet(depth)
    assert default.out_strides == [8, 16, 32] and default.out_channels == widths[1:]


def _ref_block(x, sd, p, stride, bottleneck):
    """Functional residual block from a state dict (eval-mode BN); stride on the 3x3 (v1.5)."""

    def bn(y, name):
        return F.batch_norm(y, sd[f"{name}.running_mean"], sd[f"{name}.running_var"],
                            sd[f"{name}.weight"], sd[f"{name}.bias"])  # fmt: skip

    if bottleneck:
        out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
        out = F.relu(
            bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2")
        )
        out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
    else:
        out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
        out = bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
    if f"{p}.downsample.0.weight" in sd:
        x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
    return F.relu(out + x)


@pytest.mark.parametrize(("depth", "blocks", "bottleneck"), [(10, [1, 1, 1, 1], False),
                                                             (50, [3, 4, 6, 3], True)])  # fmt: skip
def test_forward_matches_functional_reference(depth, blocks, bottleneck):
    torch.manual_seed(0)
    model = ResNet(depth, out_indices=(1, 2, 3, 4))
    for m in bn_layers(model):  # non-trivial BN statistics and affine parameters
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    sd = model.state_dict()
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        feats = model(x)
        y = F.conv2d(x, sd["conv1.weight"], stride=2, padding=3)
        y = F.batch_norm(
            y, sd["bn1.running_mean"], sd["bn1.running_var"], sd["bn1.weight"], sd["bn1.bias"]
        )
        y = F.max_pool2d(F.relu(y), 3, 2, 1)
        refs = []
        for i, n in enumerate(blocks, start=1):
            for b in range(n):
                stride = 2 if i > 1 and b == 0 else 1
                y = _ref_block(y, sd, f"layer{i}.{b}", stride, bottleneck)
            refs.append(y)
    for f, r in zip(feats, refs, strict=True):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-4)


def test_only_needed_stages_run_and_unused_layers_are_frozen():
    model = ResNet(18, out_indices=(1, 2))
    calls = []
    model.layer3.register_forward_hook(lambda *a: calls.append(3))
    feats = model(torch.randn(1, 3, 32, 32))
    assert len(feats) == 2 and calls == []
    assert not any(p.requires_grad for p in model.layer3.parameters())
    assert not any(p.requires_grad for p in model.layer4.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())


@pytest.mark.parametrize("frozen_stages", [0, 1, 2])
def test_frozen_stages(frozen_stages):
    torch.manual_seed(0)
    model = ResNet(10, frozen_stages=frozen_stages)
    frozen = ["conv1.", "bn1."] + [f"layer{i}." for i in range(1, frozen_stages + 1)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.training == (not any(name.startswith(f.rstrip(".")) for f in frozen)), name
    sum(f.square().mean() for f in model(torch.randn(2, 3, 32, 32))).backward()
    after = model.state_dict()
    for name, p in model.named_parameters():
        is_frozen = any(name.startswith(f) for f in frozen)
        assert p.requires_grad == (not is_frozen), name
        assert (p.grad is None) == is_frozen, name
    for k in before:
        if "running_mean" in k:
            assert torch.equal(before[k], after[k]) == any(k.startswith(f) for f in frozen), k


def test_frozen_stages_none_trains_everything():
    model = ResNet(10, frozen_stages=-1, out_indices=(1, 2, 3, 4)).train()
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_norm_eval_keeps_running_stats():
    model = ResNet(10, norm_eval=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert model.training and model.layer2.training
    assert not any(m.training for m in bn_layers(model))
    sum(f.sum() for f in model(torch.randn(1, 3, 32, 32) * 3 + 1)).backward()
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v), k
    # affine parameters still train unless freeze_norm
    assert model.bn1.weight.requires_grad and model.layer3[0].bn1.weight.grad is not None
    assert not any(m.training for m in model.eval().modules())
    model.train()
    assert model.layer1[0].training and not any(m.training for m in bn_layers(model))


def test_without_norm_eval_running_stats_update():
    model = ResNet(10).train()
    before = model.layer3[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(before, model.layer3[0].bn1.running_mean)


def test_freeze_norm():
    model = ResNet(10, freeze_norm=True, norm_eval=True).train()
    for name, p in model.named_parameters():
        assert p.requires_grad == (".bn" not in f".{name}" and "downsample.1" not in name), name
    sum(f.sum() for f in model(torch.randn(1, 3, 32, 32))).backward()
    assert all(m.weight.grad is None and m.bias.grad is None for m in bn_layers(model))
    assert model.layer2[0].conv1.weight.grad is not None


def test_style_moves_bottleneck_stride(no_conv_init):
    pt = ResNet(50, style="pytorch")
    caffe = ResNet(50, style="caffe")
    for i in (2, 3, 4):
        a, b = getattr(pt, f"layer{i}")[0], getattr(caffe, f"layer{i}")[0]
        assert (a.conv1.stride, a.conv2.stride) == ((1, 1), (2, 2))
        assert (b.conv1.stride, b.conv2.stride) == ((2, 2), (1, 1))
        assert a.downsample[0].stride == b.downsample[0].stride == (2, 2)
    assert all(c.stride == (1, 1) for m in caffe.layer1 for c in (m.conv1, m.conv2))
    with torch.no_grad():
        shapes = [[f.shape for f in m.eval()(torch.randn(1, 3, 32, 32))] for m in (pt, caffe)]
    assert shapes[0] == shapes[1]
    # basic blocks ignore the style: stride stays on their first 3x3 conv
    basic = ResNet(18, style="caffe")
    assert basic.layer2[0].conv1.stride == (2, 2) and basic.layer2[0].conv2.stride == (1, 1)


def test_init_matches_torchvision_defaults():
    torch.manual_seed(0)
    model = ResNet(18)
    w = model.layer4[1].conv2.weight  # fan_out = 512 * 3 * 3
    assert abs(w.std().item() / (2.0 / (512 * 9)) ** 0.5 - 1) < 0.02
    assert abs(w.mean().item()) < 1e-3
    w = model.conv1.weight  # fan_out = 64 * 7 * 7
    assert abs(w.std().item() / (2.0 / (64 * 49)) ** 0.5 - 1) < 0.05
    for m in bn_layers(model):
        assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 20},
        {"depth": 18, "out_indices": (0, 1)},
        {"depth": 18, "out_indices": (5,)},
        {"depth": 18, "out_indices": ()},
        {"depth": 18, "out_indices": (3, 2)},
        {"depth": 18, "frozen_stages": 5},
        {"depth": 50, "style": "tf"},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(NasSearchError) as info:
        build_backbone(**kwargs)
    assert "\n" not in str(info.value)
