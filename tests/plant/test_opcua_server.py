"""The OPC UA server alone (no line) with a real asyncua client: where the PIN check runs, a
close that comes before the server's loop, sessions logged out when they close."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from asyncua import Client, ua
from conftest import free_port
from test_pipeline import wait_until

from station.config import OpcuaConfig
from station.core.result import Counters, LineStatus, StationState
from station.outputs.opcua_server import OpcuaOutput


class Actions:
    """Records what the server asks of the app (a stand-in for PlantControl: these tests are
    about the server's threads, the app's checks are tested in test_opcua.py)."""

    def __init__(self) -> None:
        self.login_threads: list[str] = []
        self.logged_out: list[Any] = []

    def login(self, name: str, password: str) -> Any | None:
        self.login_threads.append(threading.current_thread().name)
        return f"session-{name}" if password == "1234" else None

    def logout(self, session: Any) -> None:
        self.logged_out.append(session)

    def switch_product(self, session: Any | None, product: str) -> None: ...

    def trigger(self, session: Any | None) -> None: ...

    def acknowledge(self, session: Any | None, alarm: str) -> None: ...


def _status() -> LineStatus:
    counters = Counters(failsafe_rejects=2, late_results=1)
    return LineStatus(state=StationState.RUNNING, counters=counters)


def server(actions: Actions) -> OpcuaOutput:
    return OpcuaOutput(OpcuaConfig(port=free_port()), "st1", _status, lambda: "demo", actions)


def olga(out: OpcuaOutput) -> Client:
    """A client of the server that logs in as the operator olga."""
    c = Client(f"opc.tcp://127.0.0.1:{out.cfg.port}/station/", timeout=10)
    c.set_user("olga")
    c.set_password("1234")
    return c


def test_the_pin_check_runs_off_the_servers_loop_and_counters_read() -> None:
    actions = Actions()
    out = server(actions)
    out.start()
    try:
        assert out.ready(30)

        async def login() -> None:
            c = olga(out)
            async with c:
                idx = await c.get_namespace_index("urn:station:st1")
                path = "Station.Counters.FailsafeRejects"
                counter = c.get_node(ua.NodeId(path, idx))
                while await counter.read_value() != 2:  # the status is written every 0.25 s
                    await asyncio.sleep(0.05)
                late = c.get_node(ua.NodeId("Station.Counters.LateResults", idx))
                assert await late.read_value() == 1

        asyncio.run(asyncio.wait_for(login(), 10))
        assert actions.login_threads and "opcua" not in actions.login_threads
    finally:
        assert out.close(3.0)


def test_a_close_before_the_server_has_its_loop_stops_the_thread() -> None:
    out = server(Actions())
    out.start()
    out.close(0.1)  # at once: asyncua is still building its address space
    thread = out._thread
    assert thread is not None
    wait_until(lambda: not thread.is_alive(), 30, "the server's thread ends")
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", out.cfg.port)) != 0  # it never listened


def test_a_closed_client_session_is_logged_out() -> None:
    actions = Actions()
    out = server(actions)
    out.start()
    try:
        assert out.ready(30)

        async def login() -> None:
            c = olga(out)
            async with c:
                assert actions.logged_out == []

        asyncio.run(login())
        wait_until(lambda: actions.logged_out == ["session-olga"], 5, "the logout")
    finally:
        assert out.close(3.0)
