"""Products: a recipe each (camera and model settings) with its collected parts and its models.

    data_dir/products/<name>/recipe.json    {"overlay": {"camera": ..., "model": ...},
                                              "created_at", "created_by", "notes"}
    data_dir/products/<name>/parts/good/     parts collected as good (PNG, numbered)
    data_dir/products/<name>/parts/bad/      known-bad parts, for choosing the limit
    data_dir/products/<name>/parts/dropped/  parts the technician took out of the good ones
    data_dir/products/ACTIVE                 the product the line runs (after a switch)
    data_dir/models/<name>/vNNNN             its model versions (station.model.artifact)

The overlay lists only what differs from the station's config and is checked like a config file
(an unknown key or a wrong type is refused with its name). The demo product needs no recipe.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.config import StationConfig, with_overlay
from station.core.errors import StationError
from station.core.files import fsync_dir, write_atomic
from station.model.artifact import PRODUCT_NAME, ModelStore, check_product_name, creator, now_iso
from station.model.signing import Signer

PRODUCTS_DIR = "products"
RECIPE = "recipe.json"
ACTIVE = "ACTIVE"
PART_KINDS = ("good", "bad", "dropped")


@dataclass(frozen=True)
class Product:
    """One product's recipe."""

    name: str
    overlay: dict[str, Any]
    created_at: str = ""
    created_by: str = ""
    notes: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ProductStore:
    """The products of one data directory."""

    def __init__(self, data_dir: str | Path, signer: Callable[[], Signer] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / PRODUCTS_DIR
        self.models = ModelStore(self.data_dir / "models", signer)

    def folder(self, name: str) -> Path:
        return self.root / check_product_name(name)

    def names(self) -> list[str]:
        """Products with a recipe or a model, by name."""
        with_recipe = (
            {
                p.name
                for p in self.root.iterdir()
                if (p / RECIPE).is_file() and PRODUCT_NAME.match(p.name)
            }
            if self.root.is_dir()
            else set()
        )
        return sorted(with_recipe | set(self.models.products()))

    def get(self, name: str) -> Product | None:
        """A product's recipe (None when it has none: the demo, or one made by `station fit`)."""
        path = self.folder(name) / RECIPE
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StationError(f"{path}: the product's recipe cannot be read: {exc}") from exc
        return Product(
            name=name,
            overlay=dict(d.get("overlay", {})),
            created_at=str(d.get("created_at", "")),
            created_by=str(d.get("created_by", "")),
            notes=str(d.get("notes", "")),
        )

    def create(
        self,
        name: str,
        overlay: dict[str, Any],
        base: StationConfig,
        *,
        by: str = "",
        notes: str = "",
    ) -> Product:
        """Write a new product's recipe (refused when it exists or its settings are wrong)."""
        check_product_name(name)
        if self.get(name) is not None or name in self.models.products():
            raise StationError(f"a product named '{name}' exists already")
        product = Product(name, dict(overlay), now_iso(), by or creator(), notes)
        self.config(product, base)  # the overlay is checked before anything is written
        self._write(product)
        return product

    def update(self, name: str, overlay: dict[str, Any], base: StationConfig) -> Product:
        """Replace a product's overlay (e.g. camera exposure saved from the camera check)."""
        old = self.get(name) or Product(name, {}, now_iso(), creator())
        product = dataclasses.replace(old, overlay=dict(overlay))
        self.config(product, base)
        self._write(product)
        return product

    def _write(self, product: Product) -> None:
        folder = self.folder(product.name)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / RECIPE, json.dumps(product.to_json(), indent=2).encode())

    def config(self, product: Product | str, base: StationConfig) -> StationConfig:
        """The station's config for a product: `base` with its recipe's overlay on top."""
        if isinstance(product, str):
            found = self.get(product)
            name = product
            overlay = found.overlay if found is not None else {}
        else:
            name, overlay = product.name, product.overlay
        table = dict(overlay)
        table["model"] = {**table.get("model", {}), "product": name}
        origin = f"{self.folder(name) / RECIPE}"
        return with_overlay(base, table, origin)

    def parts(self, name: str, kind: str) -> Path:
        """The folder of a product's collected parts of one kind (good, bad, dropped)."""
        if kind not in PART_KINDS:
            raise ValueError(f"part kind must be one of {PART_KINDS}, not {kind!r}")
        return self.folder(name) / "parts" / kind

    def active(self) -> str | None:
        """The product the line was last switched to, if any."""
        try:
            name = (self.root / ACTIVE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name if PRODUCT_NAME.match(name) else None

    def set_active(self, name: str) -> None:
        """Remember the product the line runs (a restart continues with it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / ACTIVE, (check_product_name(name) + "\n").encode())
        fsync_dir(self.root)
