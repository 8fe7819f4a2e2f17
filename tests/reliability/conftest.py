"""Fault scenarios: they drive the same real stations as tests/integration, with its helpers."""

import sys
from pathlib import Path

# test_pipeline's line_config / wait_until / station_factory: one set of helpers for both folders.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
