"""A station never runs a model someone altered: signatures, the file list, the CURRENT pointer.

Each case edits a real copy of the session's demo model the way a person with access to the
data directory could, and checks that the line refuses it with a message naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import line_config, wait_until  # tests/integration

from station.app import StationApp
from station.config import load_config, with_overlay
from station.core.errors import ConfigError, ModelError
from station.core.result import StationState
from station.model.artifact import MANIFEST, _manifest_hash, load_artifact
from station.model.signing import SIGNATURE, Signer, Trust

Trusting = Callable[[Path], Path]


@pytest.fixture
def data(tmp_path: Path, demo_model: Path, trust_plant_key: Trusting) -> Path:
    """A data directory with the demo model (signed by the plant key, which it trusts)."""
    d = trust_plant_key(tmp_path / "data")
    shutil.copytree(demo_model, d / "models" / "demo" / "v0001")
    return d


@pytest.fixture
def station(demo_product: Path, data: Path) -> Iterator[Callable[[], StationApp]]:
    made: list[StationApp] = []

    def make() -> StationApp:
        app = StationApp(line_config(demo_product, fps=20.0), data)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


def _rewrite(version: Path, change: Callable[[dict], None]) -> None:
    """Edit the manifest and recompute its content hash, as a careful tamperer would."""
    d = json.loads((version / MANIFEST).read_text())
    change(d)
    d["content_sha256"] = _manifest_hash(d)
    (version / MANIFEST).write_text(json.dumps(d, indent=2))


def _refused(make: Callable[[], StationApp]) -> str:
    """Start the line; it must wait without a model, and say why."""
    app = make()
    app.start()
    wait_until(lambda: app.status().state == StationState.MODEL_MISSING, 60, "model refused")
    assert app.status().counters.inspected == 0
    return app.status().reason


def test_the_untouched_model_runs(station: Callable[[], StationApp]) -> None:
    app = station()
    app.start()
    wait_until(lambda: app.status().counters.inspected >= 3, 60, "three parts inspected")
    assert app.status().model_version == "demo/v0001"


def test_a_raised_limit_with_a_recomputed_hash_is_refused(
    station: Callable[[], StationApp], data: Path
) -> None:
    _rewrite(data / "models" / "demo" / "v0001", lambda d: d.update(threshold=1e9))
    reason = _refused(station)
    assert "does not match the manifest" in reason and "changed after it was signed" in reason


def test_an_unsigned_model_is_refused_unless_the_admin_allows_it(
    station: Callable[[], StationApp], data: Path
) -> None:
    (data / "models" / "demo" / "v0001" / SIGNATURE).unlink()
    reason = _refused(station)
    assert "not signed" in reason and "model.allow_unsigned" in reason and "trust" in reason
    relaxed = Trust.load(data / "trust", allow_unsigned=True)
    assert load_artifact(data / "models" / "demo" / "v0001", relaxed).version == "v0001"


def test_a_model_signed_by_a_foreign_key_is_refused_naming_the_key(
    station: Callable[[], StationApp], data: Path, tmp_path: Path
) -> None:
    from station.model.signing import station_signer

    foreign = station_signer(tmp_path / "elsewhere")
    version = data / "models" / "demo" / "v0001"
    (version / SIGNATURE).write_bytes(foreign.signature((version / MANIFEST).read_bytes()))
    reason = _refused(station)
    assert f"signed by key {foreign.key_id}" in reason and "not in the trust folder" in reason


def test_a_manifest_that_lists_no_files_is_refused(data: Path) -> None:
    version = data / "models" / "demo" / "v0001"
    _rewrite(version, lambda d: d.update(files={}))
    np.save(version / "memory_bank.npy", np.zeros((10, 4), np.float32))  # a zeroed bank
    with pytest.raises(
        ModelError, match=re.escape("does not list feature_extractor.onnx, memory_bank.npy")
    ):
        load_artifact(version)


def test_names_outside_the_folder_are_never_opened(data: Path) -> None:
    version = data / "models" / "demo" / "v0001"

    def point_out(d: dict) -> None:
        d["files"]["../../../../etc/passwd"] = {"bytes": 1, "sha256": "0" * 64}

    _rewrite(version, point_out)
    with pytest.raises(ModelError) as e:
        load_artifact(version)
    msg = str(e.value)
    assert "'../../../../etc/passwd', which is not a plain file name" in msg
    assert str(Path("/etc/passwd").stat().st_size) not in msg.split("passwd'")[-1]


def test_a_file_the_manifest_does_not_list_is_refused(data: Path) -> None:
    version = data / "models" / "demo" / "v0001"
    (version / "extra_bank.npy").write_bytes(b"\0" * 64)
    with pytest.raises(ModelError, match=re.escape("does not list: extra_bank.npy")):
        load_artifact(version)


def test_current_must_name_a_version_of_the_product(
    station: Callable[[], StationApp], data: Path
) -> None:
    (data / "models" / "demo" / "CURRENT").write_text("../../../tmp/evil\n")
    with pytest.raises(ModelError, match="not a version of demo"):
        StationApp(line_config(data), data).store.current("demo")
    reason = _refused(station)
    assert "CURRENT names '../../../tmp/evil'" in reason
    # The way out the message names works: activating a version mends the pointer.
    fixer = StationApp(load_config(), data)
    try:
        assert [v.version for v in fixer.model_versions("demo")] == ["v0001"]
        fixer.activate_model(fixer.shell_session(), "v0001", product="demo")
        assert fixer.store.current("demo") == data / "models" / "demo" / "v0001"
    finally:
        fixer.close()


def test_a_version_the_line_would_refuse_cannot_be_activated(data: Path) -> None:
    app = StationApp(load_config(), data)
    try:
        session = app.shell_session()
        v2 = app.set_threshold(session, 30.0, product="demo", reason="test").version
        (data / "models" / "demo" / v2 / SIGNATURE).unlink()
        with pytest.raises(ModelError, match="not signed"):
            app.activate_model(session, v2, product="demo")
        assert app.store.current("demo").name == "v0001"
    finally:
        app.close()


def test_product_names_are_checked(demo_product: Path, tmp_path: Path) -> None:
    cfg = line_config(demo_product, product="../../x")
    with pytest.raises(ModelError, match=re.escape("'../../x' is not a product name")):
        StationApp(cfg, tmp_path / "data")


def test_a_recipe_cannot_let_unsigned_models_in() -> None:
    with pytest.raises(ConfigError, match=re.escape("model.allow_unsigned: a station setting")):
        with_overlay(load_config(), {"model": {"allow_unsigned": True}}, "recipe.json")


def test_a_new_limit_never_re_signs_an_altered_model(data: Path) -> None:
    """set_threshold derives a version from the current one: from an altered one it refuses."""
    app = StationApp(load_config(), data)
    try:
        _rewrite(data / "models" / "demo" / "v0001", lambda d: d.update(notes="edited"))
        with pytest.raises(ModelError, match="changed after it was signed"):
            app.set_threshold(app.shell_session(), 30.0, product="demo", reason="test")
        assert app.store.versions("demo") == ["v0001"]
    finally:
        app.close()


def test_the_station_signs_what_it_builds_and_an_admin_can_sign_a_checked_copy(
    data: Path, plant_key: Signer
) -> None:
    app = StationApp(load_config(), data)
    try:
        session = app.shell_session()
        v2 = app.set_threshold(session, 30.0, product="demo", reason="test").version
        own = app.store.signer()
        assert own is not None and own.key_id != plant_key.key_id
        record = json.loads((data / "models" / "demo" / v2 / SIGNATURE).read_text())
        assert record["key"] == own.key_id and own.key_id in app.trust().keys
        assert load_artifact(data / "models" / "demo" / v2, app.trust()).version == v2
        # A version without a signature, checked and signed by the admin, runs again.
        (data / "models" / "demo" / "v0001" / SIGNATURE).unlink()
        assert app.sign_model(session, "demo", "v0001") == own.key_id
        assert load_artifact(data / "models" / "demo" / "v0001", app.trust()).version == "v0001"
        actions = [r.action for r in app.audit_rows(session)]
        assert "model_sign" in actions
    finally:
        app.close()


def test_signing_refuses_a_damaged_model(data: Path) -> None:
    app = StationApp(load_config(), data)
    try:
        bank = data / "models" / "demo" / "v0001" / "memory_bank.npy"
        bank.write_bytes(bank.read_bytes()[:-16])
        with pytest.raises(ModelError, match="truncated or altered"):
            app.sign_model(app.shell_session(), "demo", "v0001")
    finally:
        app.close()


def test_a_trusted_key_added_later_counts_without_a_restart(
    station: Callable[[], StationApp], data: Path, tmp_path: Path
) -> None:
    plant_trust = tmp_path / "plant-trust"
    shutil.move(data / "trust", plant_trust)
    app = station()
    app.start()
    wait_until(lambda: app.status().state == StationState.MODEL_MISSING, 60, "refused")
    assert "not in the trust folder" in app.status().reason
    # The admin puts the plant key back: the line picks the model up at its next look.
    shutil.copytree(plant_trust, data / "trust")
    wait_until(lambda: app.status().counters.inspected >= 1, 60, "the model, trusted again")


def test_a_model_let_in_unsigned_stays_unsigned_when_derived(data: Path) -> None:
    """With model.allow_unsigned, a new limit on an unsigned model must not come out signed
    by the station: that would turn a model nobody vouched for into a trusted one."""
    (data / "models" / "demo" / "v0001" / SIGNATURE).unlink()
    cfg = load_config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, allow_unsigned=True))
    app = StationApp(cfg, data)
    try:
        v2 = app.set_threshold(app.shell_session(), 30.0, product="demo", reason="test").version
        assert not (data / "models" / "demo" / v2 / SIGNATURE).exists()
        with pytest.raises(ModelError, match="not signed"):
            load_artifact(data / "models" / "demo" / v2, Trust.load(data / "trust"))
    finally:
        app.close()


def test_files_swapped_after_the_check_are_never_used(data: Path) -> None:
    """The extractor and the bank are used from the bytes that were hashed: an ONNX file or a
    bank replaced after the check reaches neither the runtime nor a derived version."""
    version = data / "models" / "demo" / "v0001"
    original = (version / "feature_extractor.onnx").read_bytes()
    artifact = load_artifact(version, Trust.load(data / "trust"))
    assert artifact.onnx_bytes == original and artifact.signed_by is not None
    (version / "feature_extractor.onnx").write_bytes(b"swapped after the check")
    np.save(version / "memory_bank.npy", np.zeros_like(artifact.bank))

    from station.model.artifact import write_derived
    from station.model.memory_bank import MemoryBank
    from station.model.patchcore import PatchCore, create_runtime

    runtime = create_runtime("onnx", artifact)  # from the checked bytes: loads and runs
    model = PatchCore(artifact, runtime, MemoryBank(artifact.bank))
    assert model.predict(np.full((64, 64), 128, np.uint8)).score > 0
    out = write_derived(data / "derived" / "v0002", artifact.manifest, artifact, None)
    assert (out / "feature_extractor.onnx").read_bytes() == original
    assert np.array_equal(load_artifact(out).bank, artifact.bank)


def test_engines_are_sealed_and_a_swapped_engine_is_refused(data: Path, tmp_path: Path) -> None:
    """A TensorRT engine is built on the station from the signed ONNX model, so the model's
    signature cannot cover it: the station seals what it builds and reuses only sealed engines.
    The seal functions are TensorRT's own (station.runtime.tensorrt_runtime), run here on a real
    file without a GPU; the engine bytes stand for a plan, which is opaque to them."""
    from station.model.signing import EngineSealer, station_signer
    from station.runtime.tensorrt_runtime import check_sealed, seal_engine

    signer = station_signer(data)
    sealer = EngineSealer(signer, Trust.load(data / "trust"))
    engine = data / "models" / "demo" / "v0001" / "engines" / "x.fp16.0123456789abcdef.engine"
    engine.parent.mkdir()
    plan = bytes(range(256)) * 64
    engine.write_bytes(plan)
    with pytest.raises(ModelError, match=r"not sealed by this station \(x.fp16.*\.seal missing\)"):
        check_sealed(engine, plan, sealer)
    seal_engine(engine, plan, sealer)
    check_sealed(engine, plan, sealer)  # the engine as built
    with pytest.raises(ModelError, match="changed after it was built"):
        check_sealed(engine, plan[:-1] + b"\0", sealer)
    # Sealed by a key this station does not trust (another machine's cache copied in).
    stranger = EngineSealer(station_signer(tmp_path / "other"), Trust.load(data / "trust"))
    seal_engine(engine, plan, stranger)
    with pytest.raises(ModelError, match=f"signed by key {stranger.signer.key_id}"):
        check_sealed(engine, plan, sealer)
