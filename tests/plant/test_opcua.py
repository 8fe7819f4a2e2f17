"""The station's OPC UA server read and called with a real asyncua client on 127.0.0.1: the
last result and counters equal the database's, the methods go through the app's roles and
audit as the logged-in station user, anonymous and wrong PINs are refused."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from conftest import free_port
from test_line_io import POLL_S, PlcSim, coil_reject
from test_pipeline import line_config, wait_until

from station.app import StationApp
from station.config import PlcConfig, StationConfig
from station.model.patchcore import PatchCore
from station.records import Database, db_path

NS = "urn:station:st1"


def opcua_config(cfg: StationConfig, port: int, **kw: Any) -> StationConfig:
    cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, station="st1"))
    return dataclasses.replace(cfg, opcua=dataclasses.replace(cfg.opcua, port=port, **kw))


def add_users(station: StationApp) -> None:
    shell = station.shell_session()
    station.access.add_user(shell, "tess", "technician", "4711")
    station.access.add_user(shell, "olga", "operator", "1234")


def client(port: int, user: str = "", pin: str = "") -> Client:
    c = Client(f"opc.tcp://127.0.0.1:{port}/station/", timeout=10)
    if user:
        c.set_user(user)
        c.set_password(pin)
    return c


async def node(c: Client, path: str) -> Any:
    idx = await c.get_namespace_index(NS)
    return c.get_node(ua.NodeId(path, idx))


async def read(c: Client, path: str) -> Any:
    return await (await node(c, path)).read_value()


class PartIds:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def datachange_notification(self, n: Any, value: Any, data: Any) -> None:
        if value:
            self.seen.append(value)


def test_last_result_and_counters_equal_the_database(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = opcua_config(line_config(demo_product, fps=10.0), port)
    station = station_factory(cfg, model=demo_patchcore)
    add_users(station)

    async def scenario() -> tuple[list[str], dict[str, Any]]:
        handler = PartIds()
        async with client(port, "olga", "1234") as c:
            sub = await c.create_subscription(20, handler)
            await sub.subscribe_data_change(
                await node(c, "Station.LastResult.PartId"), queuesize=100
            )
            while len(handler.seen) < 8:
                await asyncio.sleep(0.05)
            assert await asyncio.to_thread(station.stop)  # the server stays until close()
            await asyncio.sleep(0.5)  # the last status written (every 0.25 s)
            got = {p: await read(c, f"Station.{p}") for p in (
                "LastResult.PartId", "LastResult.Verdict", "LastResult.Score",
                "LastResult.Limit", "LastResult.Time", "Counters.Inspected", "Counters.Nok",
                "Counters.Check", "Counters.Dropped", "Counters.Unrecorded", "State", "Product",
                "ModelVersion")}  # fmt: skip
        return handler.seen, got

    station.start()
    assert station.plant.opcua.ready(30)
    seen, got = asyncio.run(scenario())
    with Database(db_path(tmp_path / "data"), create=False) as db:
        rows = sorted(db.query_inspections(), key=lambda r: r.time)
    last = rows[-1]
    assert got["LastResult.PartId"] == last.part_id
    assert got["LastResult.Verdict"] == last.verdict.value
    assert got["LastResult.Score"] == last.score and got["LastResult.Limit"] == last.threshold
    assert abs(got["LastResult.Time"].timestamp() - last.time) < 1e-3
    assert got["Counters.Inspected"] == len(rows)
    assert got["Counters.Nok"] == sum(r.verdict.value == "NOK" for r in rows)
    assert got["Counters.Check"] == sum(r.verdict.value == "CHECK" for r in rows)
    assert got["Counters.Unrecorded"] == 0
    assert (got["State"], got["Product"], got["ModelVersion"]) == ("stopped", "demo", "demo/v0001")
    # From the part current when it subscribed on, the client saw every part of the database
    # in order, none missed, the last one included.
    order = [r.part_id for r in rows]
    assert len(seen) >= 8 and seen == order[order.index(seen[0]) :]


def test_methods_act_as_the_station_user_with_its_role_and_audit(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = opcua_config(line_config(demo_product, fps=4.0), port)
    station = station_factory(cfg, model=demo_patchcore)
    add_users(station)
    station.create_product(station.shell_session(), "other")
    station.start()
    assert station.plant.opcua.ready(30)

    async def call(user: str, pin: str, method: str, *args: Any) -> str:
        async with client(port, user, pin) as c:
            idx = await c.get_namespace_index(NS)
            parent = "Station.Alarms" if method == "Acknowledge" else "Station"
            try:
                await (await node(c, parent)).call_method(
                    ua.NodeId(f"{parent}.{method}", idx), *args
                )
            except ua.UaStatusCodeError as exc:
                return type(exc).__name__
            return "ok"

    async def refused(user: str = "", pin: str = "") -> str:
        try:
            async with client(port, user, pin) as c:
                await read(c, "Station.State")
        except (ua.UaStatusCodeError, ConnectionError, asyncio.TimeoutError) as exc:
            return type(exc).__name__
        return "connected"

    assert asyncio.run(call("olga", "1234", "SwitchProduct", "other")) == "BadUserAccessDenied"
    assert station.product == "demo"
    assert asyncio.run(call("tess", "4711", "SwitchProduct", "other")) == "ok"
    assert station.product == "other"
    assert asyncio.run(call("tess", "4711", "SwitchProduct", "nope")) == "BadInvalidState"
    assert asyncio.run(call("olga", "1234", "Trigger")) == "BadInvalidState"  # no trigger input
    assert asyncio.run(call("olga", "1234", "Acknowledge", "no model")) == "ok"
    assert asyncio.run(refused()) != "connected"  # anonymous: off by default
    assert asyncio.run(refused("tess", "0000")) != "connected"

    def opcua_audit() -> list[tuple[str, str, str, str]]:
        rows = station.audit_rows(station.shell_session())
        return [(r.user, r.action, r.object, r.via) for r in rows if r.via == "opcua"]

    # Each client's session is logged out when it closes (audited).
    wait_until(lambda: opcua_audit().count(("olga", "logout", "", "opcua")) == 3, 10, "logouts")
    audit = opcua_audit()
    assert ("olga", "denied", "other", "opcua") in audit
    assert ("tess", "product_switch", "other", "opcua") in audit
    assert ("olga", "alarm_acknowledge", "no model", "opcua") in audit
    assert ("tess", "login_refused", "", "opcua") in audit


@pytest.mark.parametrize("anonymous", [True])
def test_anonymous_reads_when_allowed_but_never_calls(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    anonymous: bool,
) -> None:
    port = free_port()
    cfg = opcua_config(line_config(demo_product, fps=4.0), port, anonymous=anonymous)
    station = station_factory(cfg, model=demo_patchcore)
    station.start()
    assert station.plant.opcua.ready(30)
    wait_until(lambda: station.line.state.value == "running", 30, "running")

    async def scenario() -> tuple[str, str]:
        async with client(port) as c:
            idx = await c.get_namespace_index(NS)
            state = ""
            while state != "running":
                state = await read(c, "Station.State")
                await asyncio.sleep(0.05)
            try:
                await (await node(c, "Station")).call_method(
                    ua.NodeId("Station.SwitchProduct", idx), "demo"
                )
            except ua.UaStatusCodeError as exc:
                return state, type(exc).__name__
            return state, "ok"

    assert asyncio.run(scenario()) == ("running", "BadUserAccessDenied")


def test_an_opcua_trigger_inspects_one_part_recorded_and_audited(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    """plc.trigger = true with a real pymodbus PLC that never triggers itself: the part comes
    from the OPC UA Trigger alone."""
    plc = PlcSim().start()
    try:
        port = free_port()
        cfg = dataclasses.replace(
            opcua_config(line_config(demo_product, fps=0.0), port),
            reject=coil_reject(plc.port),
            plc=PlcConfig(host="127.0.0.1", port=plc.port, poll_s=POLL_S, trigger=True),
        )
        station = station_factory(cfg, model=demo_patchcore)
        add_users(station)
        station.start()
        assert station.plant.opcua.ready(30)
        wait_until(lambda: station.line.state.value == "running", 30, "running")

        async def trigger() -> None:
            async with client(port, "olga", "1234") as c:
                idx = await c.get_namespace_index(NS)
                await (await node(c, "Station")).call_method(ua.NodeId("Station.Trigger", idx))

        asyncio.run(trigger())

        def rows() -> list[Any]:
            with Database(db_path(tmp_path / "data"), create=False) as db:
                return list(db.query_inspections())

        wait_until(lambda: len(rows()) == 1, 20, "the part's row")
        gate = station.gate
        assert gate is not None and gate.counters().parts == 1 and gate.counters().failsafe == 0
        audit = [r for r in station.audit_rows(station.shell_session()) if r.action == "trigger"]
        assert [(r.user, r.object, r.via) for r in audit] == [("olga", "demo", "opcua")]
        assert audit[0].after == "1"  # the part's number at the gate
    finally:
        plc.stop()
