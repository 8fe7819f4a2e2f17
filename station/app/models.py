"""The line's model source for a product: its current version in the data directory's store.

For the demo product it also builds what a first start needs (the demo product's images and the
demo model, see `station.app.demo`): the line only ever asks "which model now?".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from station.app.demo import DEMO_PRODUCT, build_demo_model, ensure_demo_product
from station.config import StationConfig
from station.core.result import StationEvent
from station.model.artifact import ModelStore
from station.model.patchcore import PatchCore
from station.model.search import SearchSpec
from station.model.signing import EngineSealer, Trust
from station.runtime.base import RuntimeKind


def uses_demo_replay(cfg: StationConfig) -> bool:
    """Whether the camera is the replay of the built-in demo product (no path configured)."""
    return cfg.camera.source == "replay" and not cfg.camera.replay.path


class ProductModels:
    """`ModelSource` over `store` for `product`, loaded with the configured runtime."""

    def __init__(
        self,
        cfg: StationConfig,
        data_dir: Path,
        store: ModelStore,
        product: str,
        trust: Callable[[], Trust] | None = None,
    ) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.store = store
        self.product = product
        self.trust = trust  # read at each load: a key put into the trust folder counts at once

    def prepare(self, report: Callable[[str], None], emit: Callable[[StationEvent], None]) -> None:
        """First start of the demo: write the demo product and fit its model if missing."""
        demo_model = self.product == DEMO_PRODUCT and not self.store.versions(DEMO_PRODUCT)
        if not (demo_model or uses_demo_replay(self.cfg)):
            return
        if demo_model:
            report("building the demo model (first start)")
        root = ensure_demo_product(self.data_dir)
        if demo_model:
            build_demo_model(self.store, root, self.cfg.model, emit)

    def locate(self) -> Path | None:
        """The product's current version."""
        return self.store.current(self.product)

    def load(self, path: Path) -> PatchCore:
        """Load with the configured runtime and threads."""
        trust = self.trust() if self.trust is not None else None
        seal = None
        if self.cfg.model.runtime == RuntimeKind.TENSORRT and trust is not None:
            signer = self.store.signer()
            if signer is not None:  # engines built here are reused only if sealed here
                seal = EngineSealer(signer, trust)
        return PatchCore.load(
            path,
            self.cfg.model.runtime,
            threads=self.cfg.model.threads,
            trust=trust,
            product=self.product,
            seal=seal,
            search=SearchSpec.from_config(self.cfg.model),
        )

    def release(self, model: PatchCore) -> None:
        """Close a model the line no longer runs."""
        model.close()

    def missing(self) -> str:
        """What the banner says while there is no model."""
        return (
            f"no model for product '{self.product}' in {self.store.root}: fit one "
            f"(models/{self.product}/vNNNN) and the line picks it up"
        )
