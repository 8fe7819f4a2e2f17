"""The exportable feature extractor: backbone -> local aggregation -> upsample -> concat -> reduce.

Kept apart from fitting code so that this one module is what ONNX / TensorRT run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_pool_matrix(channels: int, out: int) -> torch.Tensor:
    """out x channels x 1 x 1 weights equal to adaptive average pooling of channels to `out`."""
    w = torch.zeros(out, channels, 1, 1)
    for i in range(out):
        start, end = (i * channels) // out, -((-(i + 1) * channels) // out)
        w[i, start:end] = 1.0 / (end - start)
    return w


class FeatureExtractor(nn.Module):
    """Locally aware patch features at stride 8 (Roth et al. 2022, sec. 3.1)."""

    def __init__(
        self,
        backbone: nn.Module,
        layers: list[str],
        channels: dict[str, int],
        aggregation: int = 3,
        feature_dim: int = 0,
        intensity_weight: float = 0.0,
    ) -> None:
        super().__init__()
        keep_only = getattr(backbone, "keep_only", None)
        if callable(keep_only):
            keep_only(list(layers))
        self.backbone = backbone
        self.layers = list(layers)
        self.aggregation = aggregation
        total = sum(channels[name] for name in self.layers)
        self.feature_dim = feature_dim if 0 < feature_dim < total else 0
        self.intensity_weight = float(intensity_weight)
        self.out_channels = (self.feature_dim or total) + (1 if self.intensity_weight else 0)
        if self.feature_dim:
            # Channel reduction by adaptive average pooling over channels, as in the paper, held as
            # a fixed 1x1 convolution: adaptive_avg_pool1d does not export to ONNX with a dynamic
            # batch, a convolution exports and runs on every runtime.
            self.register_buffer("reduce_weight", channel_pool_matrix(total, self.feature_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(images)
        # Every layer is brought to the stride-8 patch grid, whichever layers are chosen.
        size = (int(images.shape[-2]) // 8, int(images.shape[-1]) // 8)
        feats = []
        for name in self.layers:
            f = maps[name]
            if self.aggregation > 1:
                # p x p neighbourhood average: each patch sees its surroundings, so position
                # jitter between parts does not read as an anomaly.
                f = F.avg_pool2d(
                    f, self.aggregation, 1, self.aggregation // 2, count_include_pad=False
                )
            if (int(f.shape[-2]), int(f.shape[-1])) != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            feats.append(f)
        out = torch.cat(feats, dim=1)
        if self.feature_dim:
            weight = self.reduce_weight
            assert isinstance(weight, torch.Tensor)
            out = F.conv2d(out, weight)
        if self.intensity_weight:
            # ImageNet features are nearly blind to slow brightness changes (batch norm removes
            # them), yet uneven surfaces and glare are defects: append the local mean grey level
            # over about five patches, weighted to matter against the CNN channels.
            grey = images.mean(dim=1, keepdim=True)
            grey = F.adaptive_avg_pool2d(grey, size) if grey.shape[-1] != size[1] else grey
            grey = F.avg_pool2d(grey, 5, 1, 2, count_include_pad=False)
            out = torch.cat([out, grey * self.intensity_weight], dim=1)
        return out.contiguous()
