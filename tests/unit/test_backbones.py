"""Backbones: packaged ImageNet weights, torchvision-format files, and clear weight errors."""

from pathlib import Path

import pytest
import torch

from station.core.errors import ModelError
from station.model.backbones import BasicBlock, ResNet, load_backbone


@pytest.mark.parametrize(
    "name,c8,c16,c32",
    [
        ("efficientnet_lite0", 40, 112, 320),
        ("efficientnet_lite1", 40, 112, 320),
        ("efficientnet_lite2", 48, 120, 352),
    ],
)
def test_lite_backbones_load_packaged_weights(name, c8, c16, c32):
    bb = load_backbone(name)
    assert bb.channels == {"stride8": c8, "stride16": c16, "stride32": c32}
    out = bb.module(torch.zeros(1, 3, 224, 224))
    assert out["stride8"].shape == (1, c8, 28, 28) and out["stride16"].shape == (1, c16, 14, 14)
    assert out["stride32"].shape == (1, c32, 7, 7)


def test_extractor_runs_only_the_blocks_its_layers_need():
    """Stride-8/16 models must not pay for the stride-32 stage; any layer set gives the stride-8
    patch grid the map and the bank are indexed by."""
    from station.model.extractor import FeatureExtractor

    full = len(load_backbone("efficientnet_lite0").module._blocks)
    shallow = load_backbone("efficientnet_lite0")
    fx = FeatureExtractor(shallow.module, ["stride8", "stride16"], shallow.channels)
    assert len(shallow.module._blocks) < full
    assert fx(torch.zeros(1, 3, 160, 160)).shape == (1, 40 + 112, 20, 20)
    deep = load_backbone("efficientnet_lite0")
    fx = FeatureExtractor(deep.module, ["stride16", "stride32"], deep.channels)
    assert len(deep.module._blocks) == full
    assert fx(torch.zeros(1, 3, 160, 160)).shape == (1, 112 + 320, 20, 20)


def test_resnet_needs_a_weights_file():
    with pytest.raises(ModelError, match="resnet18 needs a torchvision-format weights file"):
        load_backbone("resnet18")


def test_resnet_loads_a_torchvision_state_dict(tmp_path: Path):
    """torchvision's keys and shapes (conv1, bn1, layer1..4, fc); layer4/fc are ignored."""
    ref = ResNet(BasicBlock, [2, 2, 2], 64)
    state = dict(ref.state_dict())
    state["layer4.0.conv1.weight"] = torch.zeros(512, 256, 3, 3)  # present in real files
    state["fc.weight"] = torch.zeros(1000, 512)
    f = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, f)
    bb = load_backbone("resnet18", f)
    assert bb.channels == {"stride8": 128, "stride16": 256}
    assert torch.equal(bb.module.state_dict()["conv1.weight"], state["conv1.weight"])


def test_mismatched_weights_name_file_and_shape(tmp_path: Path):
    state = dict(ResNet(BasicBlock, [2, 2, 2], 64).state_dict())
    state["layer2.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    f = tmp_path / "wrong.pth"
    torch.save(state, f)
    with pytest.raises(ModelError) as e:
        load_backbone("resnet18", f)
    assert "wrong.pth" in str(e.value) and "(128, 64, 3, 3)" in str(e.value)


def test_missing_keys_and_missing_file(tmp_path: Path):
    f = tmp_path / "partial.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, f)
    with pytest.raises(ModelError, match=r"partial.pth: not a resnet50 state dict"):
        load_backbone("resnet50", f)
    with pytest.raises(ModelError, match="weights file not found"):
        load_backbone("resnet18", tmp_path / "absent.pth")
    with pytest.raises(ModelError, match="unknown backbone 'vgg16'"):
        load_backbone("vgg16")


def test_channel_reduction_equals_adaptive_pooling_and_exports(tmp_path: Path):
    """model.feature_dim: the paper's adaptive average pooling over channels, and it must export
    to ONNX with a dynamic batch (adaptive_avg_pool1d itself does not: fit failed)."""
    import numpy as np
    import onnxruntime as ort
    import torch.nn.functional as F

    from station.model.extractor import FeatureExtractor, channel_pool_matrix
    from station.model.training import export_onnx

    x = torch.randn(2, 432, 5, 6)
    pooled = F.adaptive_avg_pool1d(x.permute(0, 2, 3, 1).reshape(2, 30, 432), 160)
    want = pooled.reshape(2, 5, 6, 160).permute(0, 3, 1, 2)
    assert torch.allclose(F.conv2d(x, channel_pool_matrix(432, 160)), want, atol=1e-6)

    bb = load_backbone("efficientnet_lite0")
    fx = FeatureExtractor(bb.module, ["stride16", "stride32"], bb.channels, feature_dim=160).eval()
    onnx_file = export_onnx(fx, 64, tmp_path / "fx.onnx")
    images = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    got = ort.InferenceSession(str(onnx_file)).run(None, {"images": images})[0]
    ref = fx(torch.from_numpy(images)).numpy()
    assert got.shape == (3, 160, 8, 8) and np.abs(got - ref).max() < 1e-4
