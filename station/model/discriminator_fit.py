"""Training the discriminator (station.model.discriminator) at fit, from good parts only.

Defect patches come from synthetic defects drawn into bank images (one per image, the kinds in
turn), good patches from those images and from the defect copies away from the defect: never a
test image or its labels. A patch is a defect where the defect covers at least a quarter of it
and good where it covers none; the ones in between are left out. The classifier trains on
standardised features; its initial weights, the sample of good patches and the mini-batches
all come from the seed, so that the same images, recipe and seed give the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from station.core.imageio import read_image
from station.model.discriminator import Discriminator
from station.model.patchcore import valid_patch_features
from station.model.preprocess import Preprocessing, patch_cover, prepare
from station.model.synthetic import KINDS, inject
from station.runtime.base import Runtime

IMAGES = 100  # bank images a discriminator is trained on (one synthetic defect each)
# Good patches kept, a seeded sample spread over the images (half from them as they are, half
# from their copies with a defect): it bounds the training set at about 60 MB whatever the
# images' size (a fit's memory bound holds for 200 strips of 500 x 1260 px).
MAX_GOOD = 100_000
STEPS, BATCH, LR, DECAY = 600, 4096, 1e-3, 1e-4
HIDDEN = (
    64  # hidden units (a linear layer alone: magnetic_tile 0.955 / 0.726 against 0.963 / 0.642)
)
COVER = 0.25  # the share of a patch a defect must cover for it to count as a defect patch


@dataclass(frozen=True)
class TrainedDiscriminator:
    """A discriminator before its scale is set (acting on raw features: the standardisation is
    folded into its first layer), and what it was trained on."""

    net: Discriminator
    images: int
    defect_patches: int
    good_patches: int


def train(
    runtime: Runtime,
    images: Sequence[Path],
    good_rows: Sequence[np.ndarray],
    pre: Preprocessing,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> TrainedDiscriminator:
    """Train on `images` (bank images) whose valid-patch features are `good_rows`."""
    if not images:
        raise ValueError("a discriminator needs at least one image")
    rng = np.random.default_rng(seed)
    cap = max(1, MAX_GOOD // (2 * len(images)))  # good patches per image and per copy

    def sample(n: int) -> np.ndarray:
        return np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))

    parts_x: list[np.ndarray] = []
    parts_y: list[np.ndarray] = []
    n_defect = 0
    for j, (path, own) in enumerate(zip(images, good_rows, strict=True)):
        if progress is not None:
            progress(j, len(images))
        parts_x.append(own[sample(len(own))])
        parts_y.append(np.zeros(len(parts_x[-1]), np.float32))
        d = inject(read_image(path), KINDS[j % len(KINDS)], seed * 1000 + j)
        p = prepare(d.image, pre)
        rows = valid_patch_features(runtime.features(p.batch), p)
        cover = patch_cover(d.mask, p)
        defect = np.flatnonzero(cover >= COVER)
        clean = np.flatnonzero(cover == 0)
        clean = clean[sample(len(clean))]
        parts_x += [rows[defect], rows[clean]]
        parts_y += [np.ones(len(defect), np.float32), np.zeros(len(clean), np.float32)]
        n_defect += len(defect)
    if progress is not None:
        progress(len(images), len(images))
    x = np.concatenate(parts_x).astype(np.float32)
    y = np.concatenate(parts_y)
    return TrainedDiscriminator(_classifier(x, y, seed), len(images), n_defect, len(y) - n_defect)


def _classifier(x: np.ndarray, y: np.ndarray, seed: int) -> Discriminator:
    """A class-balanced two-layer classifier, Adam on seeded mini-batches (its initial weights
    from the seed too); returned acting on raw features."""
    mu = x.mean(axis=0)
    sd = x.std(axis=0) + 1e-6
    xs = torch.from_numpy((x - mu) / sd)
    ys = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the caller's global torch seed is left alone
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 1)
        )
    opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=DECAY)
    n_pos = float(y.sum())
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor((len(y) - n_pos) / max(1.0, n_pos))
    )
    for _ in range(STEPS):
        idx = torch.randint(0, len(xs), (min(BATCH, len(xs)),), generator=gen)
        opt.zero_grad()
        loss = loss_fn(net(xs[idx]).squeeze(1), ys[idx])
        loss.backward()
        opt.step()
    first, last = net[0], net[2]
    assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
    w1 = first.weight.detach().numpy().T.astype(np.float64) / sd[:, None]  # C x H on raw x
    b1 = first.bias.detach().numpy().astype(np.float64) - mu.astype(np.float64) @ w1
    return Discriminator(
        w1.astype(np.float32),
        b1.astype(np.float32),
        last.weight.detach().numpy()[0].astype(np.float32),
        float(last.bias.detach().numpy()[0]),
    )


def scaled(
    trained: TrainedDiscriminator,
    good_rows: Sequence[np.ndarray],
    good_distances: Sequence[np.ndarray],
    weight: float,
) -> Discriminator:
    """The stored discriminator: its logit centred on good parts (held back: never in the bank)
    and scaled so that one standard deviation of it is `weight` standard deviations of their
    patch distances."""
    net = trained.net
    dist = np.concatenate(list(good_distances)).astype(np.float64)
    logit = np.concatenate([net.shift(r) for r in good_rows]).astype(np.float64)
    spread = float(logit.std())
    a = weight * float(dist.std()) / spread if spread > 0 else 0.0
    return Discriminator(
        net.w1, net.b1, (a * net.w2).astype(np.float32), float(a * (net.b2 - logit.mean()))
    )
