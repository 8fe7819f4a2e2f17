"""Shared fixtures: the demo product and a small demo model, each built once per test session."""

from __future__ import annotations

import os

# Before anything imports Qt: GUI tests must run without a display (CI, SSH, a line PC's service).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from station.config import ModelConfig
    from station.model.patchcore import PatchCore
    from station.model.signing import Signer

# Small on purpose: a whole session pays for these once, and they only need to look like a product.
DEMO_TRAIN, DEMO_TEST_GOOD, DEMO_PER_DEFECT = 40, 10, 5
DEMO_IMAGE_SIZE = 224


@pytest.fixture(scope="session")
def demo_product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic demo product (MVTec layout): train/good 40, test/good 10, 5 per defect."""
    from station.demo_product import generate_demo_product

    root = tmp_path_factory.mktemp("demo") / "demo_product"
    generate_demo_product(
        root, n_train=DEMO_TRAIN, n_test_good=DEMO_TEST_GOOD, n_per_defect=DEMO_PER_DEFECT
    )
    return root


@pytest.fixture(scope="session")
def demo_model_config() -> ModelConfig:
    """The model settings the demo model is fitted with (defaults at image_size 224)."""
    from station.config import ModelConfig

    return dataclasses.replace(ModelConfig(), image_size=DEMO_IMAGE_SIZE)


@pytest.fixture(scope="session")
def plant_key(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """The test session's plant key: it signs the session's models, built once and copied into
    many data directories; each of those trusts it (`trust_plant_key`)."""
    from station.model.signing import Signer, station_signer

    root = tmp_path_factory.mktemp("plant")
    station_signer(root)  # a real key file, made as a station makes its own
    return Signer.from_file(root / "keys" / "station_ed25519.pem")


@pytest.fixture(scope="session")
def trust_plant_key(plant_key: Signer) -> Callable[[Path], Path]:
    """Put the plant key's public half into a data directory's trust folder (as the person who
    deploys a plant's models does); returns the data directory."""
    from station.model.signing import TRUST_DIR, public_pem

    def trust(data: Path) -> Path:
        folder = Path(data) / TRUST_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plant.pub").write_bytes(public_pem(plant_key.key.public_key()))
        return Path(data)

    return trust


@pytest.fixture(scope="session")
def demo_model(
    demo_product: Path,
    demo_model_config: ModelConfig,
    plant_key: Signer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A model artifact fitted on the demo product's train/good: .../models/demo/v0001, signed
    with the session's plant key."""
    from station.model.patchcore import training_images
    from station.model.training import fit

    out = tmp_path_factory.mktemp("models") / "demo" / "v0001"
    fit(
        training_images(demo_product), demo_model_config, out, product="demo", progress=False,
        signer=plant_key,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def demo_patchcore(demo_model: Path) -> Iterator[PatchCore]:
    """The demo model loaded with ONNX Runtime, shared by the session (do not close it)."""
    from station.model.patchcore import PatchCore

    model = PatchCore.load(demo_model, "onnx")
    yield model
    model.close()
