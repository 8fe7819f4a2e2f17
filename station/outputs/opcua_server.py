"""The station's own OPC UA server (asyncua): its state for the plant and the PLC, and the
methods a PLC may call.

Address space (namespace `urn:station:<station>`, string node ids, so a PLC program can name
them): `Station.State`, `.Reason`, `.Product`, `.ModelVersion`, `.Limit`;
`Station.LastResult.PartId`, `.Verdict`, `.Score`, `.Limit`, `.Time`, `.Product`;
`Station.Counters.Inspected`, `.Nok`, `.Check`, `.Dropped`, `.Unrecorded`, `.BadFrames`,
`.FailsafeRejects`, `.LateResults`, `.Shift`; `Station.Alarms.Active`, `.Unacknowledged` (string
arrays) and the method `Station.Alarms.Acknowledge(alarm)`; the methods
`Station.SwitchProduct(product)` and `Station.Trigger()`.

Who may do what: a client logs in with a station user's name and PIN (the user token's
password); it then acts as that user, `via = "opcua"`, and every method goes through the app's
role check and audit (`PlantControl` in station.app.plant). Anonymous sessions are refused unless
`[opcua] anonymous = true`, and then they may read, never call. With a certificate and key only
Basic256Sha256 (signed, or signed and encrypted) channels are offered; `trusted_clients` names
the client certificates accepted.

A line sink: `submit()` only queues the result; the server's own thread (its asyncio loop)
writes each one into LastResult in order, and the status every `STATUS_EVERY_S`. OPC UA shows
the latest part: the records and MQTT carry each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from asyncua import Server, ua
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.uaprocessor import UaProcessor
from asyncua.server.user_managers import UserManager
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary

from station.config import OpcuaConfig
from station.core.errors import StationError
from station.core.result import InspectionResult, LineStatus, StationEvent
from station.outputs.plant import EventSink, Link

__all__ = ["OpcuaOutput", "PlantActions"]

log = logging.getLogger(__name__)

STATUS_EVERY_S = 0.25
RESULTS_KEPT = 1000  # results waiting for the server's loop (it takes them within 0.1 s)
_CALLER: contextvars.ContextVar[User | None] = contextvars.ContextVar("opcua_caller", default=None)
# The PIN check done off the loop for the ActivateSession being processed: (name, pin, session).
_CHECKED: contextvars.ContextVar[tuple[str, str, Any] | None] = contextvars.ContextVar(
    "opcua_checked", default=None
)
_ACTIVATE = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)  # type: ignore[arg-type]


# Station.Counters' Int64 nodes and the Counters field each one shows (one table: the address
# space is built from it and written from it).
COUNTER_NODES = {
    "Inspected": "inspected",
    "Nok": "nok",
    "Check": "check",
    "Dropped": "dropped",
    "Unrecorded": "unrecorded",
    "BadFrames": "bad_frames",
    "FailsafeRejects": "failsafe_rejects",
    "LateResults": "late_results",
}


class PlantActions(Protocol):
    """What the app lets an OPC UA client do; `session` is what `login` gave (None: anonymous).
    Each raises PermissionDenied or StationError with the reason when it refuses."""

    def login(self, name: str, password: str) -> Any | None: ...

    def logout(self, session: Any) -> None: ...

    def switch_product(self, session: Any | None, product: str) -> None: ...

    def trigger(self, session: Any | None) -> None: ...

    def acknowledge(self, session: Any | None, alarm: str) -> None: ...


@dataclass
class _StationUser(User):
    """An OPC UA user: the asyncua role (for reads) and the app's session (for methods)."""

    session: Any = None


class _Users(UserManager):
    def __init__(self, actions: PlantActions, anonymous: bool) -> None:
        self.actions = actions
        self.anonymous = anonymous

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None,
        certificate: Any = None,
    ) -> User | None:  # fmt: skip
        if username:
            checked = _CHECKED.get()
            if checked is not None and checked[:2] == (username, password or ""):
                session = checked[2]  # checked on a worker thread by _Processor
            else:
                session = self.actions.login(username, password or "")
            if session is None:
                return None  # BadUserAccessDenied
            return _StationUser(role=UserRole.User, name=username, session=session)
        if self.anonymous:
            # asyncua's User role reads and browses; the methods refuse a session-less caller.
            return _StationUser(role=UserRole.User, name="anonymous")
        return None


class _Processor(UaProcessor):
    """asyncua asks the user manager from its loop, synchronously; a PIN check is a slow hash
    and a database write, so it is done first on a worker thread for each ActivateSession with
    a user name (the other clients are not stalled meanwhile)."""

    async def process_message(self, seqhdr: Any, body: Any) -> Any:
        users = self.iserver.user_manager
        checked = None
        if isinstance(users, _Users) and self.session is not None:
            try:
                peek = body.copy()
                if nodeid_from_binary(peek) == _ACTIVATE:
                    struct_from_binary(ua.RequestHeader, peek)
                    params = struct_from_binary(ua.ActivateSessionParameters, peek)
                    token = params.UserIdentityToken
                    if isinstance(token, ua.UserNameIdentityToken) and token.UserName:
                        name, pin = self.iserver.decrypt_user_token(self.session, token)
                        session = await asyncio.to_thread(users.actions.login, name, pin or "")
                        checked = (name, pin or "", session)
            except Exception:  # not decodable here: asyncua answers it as it would
                log.debug("OPC UA: ActivateSession not checked ahead", exc_info=True)
        token_ = _CHECKED.set(checked)
        try:
            return await super().process_message(seqhdr, body)
        finally:
            _CHECKED.reset(token_)


class _Protocol(OPCUAProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.processor is not None:  # None: refused (too many connections)
            self.processor = _Processor(self.iserver, self.transport, self.limits)
            self.processor.set_policies(self.policies)


class _Binary(BinaryServer):
    def _make_protocol(self) -> OPCUAProtocol:
        return _Protocol(
            iserver=self.iserver, policies=self._policies, clients=self.clients,
            closing_tasks=self.closing_tasks, limits=self.limits,
        )  # fmt: skip


class _Server(Server):
    async def start(self) -> None:
        """Server.start with the station's protocol (asyncua builds its own in there)."""
        if self.iserver.certificate is not None:  # asyncua's warnings about the certificate
            uacrypto.check_certificate(
                self.iserver.certificate, self._application_uri, socket.gethostname()
            )
        await self._setup_server_nodes()
        await self.iserver.start()
        try:
            address, port = self._get_bind_socket_info()
            self.bserver = _Binary(self.iserver, address, port, self.limits)  # type: ignore[arg-type]
            self.bserver.set_policies(self._policies)
            await self.bserver.start()
        except Exception:
            await self.iserver.stop()
            raise


class _Session(InternalSession):
    async def close_session(self, delete_subs: bool = True) -> None:
        # The station user's session ends with the client's (closed, timed out): logged out,
        # audited, not piling up in the app's sessions.
        closing = self.state != SessionState.Closed
        await super().close_session(delete_subs)
        session, users = getattr(self.user, "session", None), self.iserver.user_manager
        if closing and session is not None and isinstance(users, _Users):
            try:
                await asyncio.to_thread(users.actions.logout, session)
            except Exception:
                log.exception("OPC UA: the logout of %s failed", getattr(self.user, "name", "?"))

    async def call(self, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        # asyncua hands a method only its arguments: the caller travels in a context variable.
        token = _CALLER.set(self.user)
        try:
            return await super().call(params)
        finally:
            _CALLER.reset(token)


_NOBODY = User(role=UserRole.Anonymous)


class _Internal(InternalServer):
    def create_session(
        self, name: str, user: User = _NOBODY, external: bool = False
    ) -> InternalSession:
        return _Session(self, self.aspace, self.subscription_service, name, user=user,
                        external=external)  # fmt: skip


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


class OpcuaOutput:
    """The OPC UA server of one station; a line sink."""

    def __init__(
        self,
        cfg: OpcuaConfig,
        station: str,
        status: Callable[[], LineStatus],
        product: Callable[[], str],
        actions: PlantActions,
        *,
        on_event: EventSink | None = None,
    ) -> None:
        self.cfg = cfg
        self.station = station
        self.endpoint = f"opc.tcp://{cfg.bind}:{cfg.port}/station/"
        self.namespace = f"urn:station:{station}"
        self._status = status
        self._product = product
        self.actions = actions
        self.link = Link("opcua", f"OPC UA server {cfg.bind}:{cfg.port}", on_event)
        self._results: deque[InspectionResult] = deque(maxlen=RESULTS_KEPT)
        self._acknowledged: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        # Set by close(): the server's thread may not have its loop yet (asyncua takes seconds
        # to build), so it checks this too and never starts serving after a close.
        self._closing = threading.Event()
        self.nodes: dict[str, Any] = {}

    # -- LineSink ----------------------------------------------------------------------------
    def submit(self, result: InspectionResult) -> bool:
        """Queue one result for LastResult (the server's loop writes it)."""
        self._results.append(result)
        return True

    def submit_event(self, event: StationEvent) -> bool:
        """Events reach OPC UA through the status (state, alarms)."""
        return True

    def count_dropped(self, n: int = 1, when: float | None = None) -> None:
        """Counted in the status's counters."""

    @property
    def alarm(self) -> str | None:
        """Why the server does not answer, while it does not."""
        return self.link.alarm

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the server on its own thread; returns at once (asyncua takes seconds to build
        its address space, and the line does not wait for it)."""
        self._thread = threading.Thread(target=self._run, name="opcua", daemon=True)
        self._thread.start()

    def ready(self, timeout: float) -> bool:
        """Wait until the server listens (True) or could not start (False)."""
        return self._ready.wait(timeout) and self.link.up

    def close(self, timeout: float = 3.0) -> bool:
        """Stop the server."""
        self._closing.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout + 2.0)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:
            log.exception("OPC UA server failed")
            self.link.failed(f"the server ended: {type(exc).__name__}: {exc}")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = _Server(iserver=_Internal(user_manager=_Users(self.actions, self.cfg.anonymous)))
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"Inspection station {self.station}")
        await server.set_application_uri(self.namespace)
        tokens: list[type] = [ua.UserNameIdentityToken]
        if self.cfg.anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        await self._security(server)
        idx = await server.register_namespace(self.namespace)
        await self._build(server, idx)
        if self._closing.is_set():  # closed while the address space was built
            return
        try:
            await server.start()
        except OSError as exc:
            self.link.lost(f"cannot listen: {exc.strerror or exc}")
            self._ready.set()
            return
        self.link.back(self.endpoint)
        self._ready.set()
        try:
            await self._update_loop()
        finally:
            await server.stop()

    async def _security(self, server: Server) -> None:
        if not self.cfg.certificate:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            return
        await server.load_certificate(self.cfg.certificate)
        await server.load_private_key(self.cfg.private_key)
        server.set_security_policy(
            [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
            ]
        )
        if self.cfg.trusted_clients:
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            store = TrustStore([Path(self.cfg.trusted_clients)], [])
            await store.load()
            # asyncua's default checks only time and URI: a trust store needs TRUSTED asked for.
            options = (
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT
            )
            server.set_certificate_validator(
                CertificateValidator(options, trust_store=store).validate
            )

    async def _build(self, server: Server, idx: int) -> None:
        def nid(path: str) -> ua.NodeId:
            return ua.NodeId(path, idx)  # type: ignore[arg-type]  # plain str / int accepted

        def qname(path: str) -> ua.QualifiedName:
            return ua.QualifiedName(path.rsplit(".", 1)[-1], idx)

        async def obj(parent: Any, path: str) -> Any:
            return await parent.add_object(nid(path), qname(path))

        async def var(parent: Any, path: str, value: Any, vtype: ua.VariantType) -> None:
            node = await parent.add_variable(nid(path), qname(path), ua.Variant(value, vtype))
            self.nodes[path] = (node, vtype)

        text, real, count = ua.VariantType.String, ua.VariantType.Double, ua.VariantType.Int64
        station = await obj(server.nodes.objects, "Station")
        for name in ("State", "Reason", "Product", "ModelVersion"):
            await var(station, f"Station.{name}", "", text)
        await var(station, "Station.Limit", 0.0, real)
        last = await obj(station, "Station.LastResult")
        for name in ("PartId", "Verdict", "Product"):
            await var(last, f"Station.LastResult.{name}", "", text)
        for name in ("Score", "Limit"):
            await var(last, f"Station.LastResult.{name}", 0.0, real)
        await var(last, "Station.LastResult.Time", _utc(0), ua.VariantType.DateTime)
        counters = await obj(station, "Station.Counters")
        for name in COUNTER_NODES:
            await var(counters, f"Station.Counters.{name}", 0, count)
        await var(counters, "Station.Counters.Shift", "", text)
        alarms = await obj(station, "Station.Alarms")
        await var(alarms, "Station.Alarms.Active", [], text)
        await var(alarms, "Station.Alarms.Unacknowledged", [], text)
        for parent, path, func, args in (
            (station, "Station.SwitchProduct", self._switch, [text]),
            (station, "Station.Trigger", self._trigger, []),
            (alarms, "Station.Alarms.Acknowledge", self._acknowledge, [text]),
        ):
            await parent.add_method(nid(path), qname(path), func, args, [])

    # -- values ------------------------------------------------------------------------------
    async def _write(self, path: str, value: Any) -> None:
        node, vtype = self.nodes[path]
        await node.write_value(ua.DataValue(ua.Variant(value, vtype)))

    async def _update_loop(self) -> None:
        assert self._stop is not None
        next_status = 0.0
        loop = asyncio.get_running_loop()
        while not self._stop.is_set() and not self._closing.is_set():
            while self._results:
                await self._write_result(self._results.popleft())
            if loop.time() >= next_status:
                next_status = loop.time() + STATUS_EVERY_S
                try:
                    st = await asyncio.to_thread(self._status)
                except Exception:  # the app's snapshot failing must not end the server
                    log.exception("OPC UA: status unavailable")
                else:
                    await self._write_status(st)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.05)

    async def _write_result(self, r: InspectionResult) -> None:
        p = "Station.LastResult."
        await self._write(p + "PartId", r.part_id)
        await self._write(p + "Verdict", r.verdict.value)
        await self._write(p + "Score", float(r.score))
        await self._write(p + "Limit", float(r.threshold))
        await self._write(p + "Time", _utc(r.timestamp))
        await self._write(p + "Product", r.product)

    async def _write_status(self, st: LineStatus) -> None:
        await self._write("Station.State", st.state.value)
        await self._write("Station.Reason", st.reason)
        await self._write("Station.Product", self._product())
        await self._write("Station.ModelVersion", st.model_version)
        await self._write("Station.Limit", float(st.threshold or 0.0))
        c = st.counters
        for name, field in COUNTER_NODES.items():
            await self._write(f"Station.Counters.{name}", int(getattr(c, field)))
        await self._write("Station.Counters.Shift", c.shift)
        active = list(st.alarms)
        self._acknowledged &= set(active)  # an alarm that went and comes back is new
        await self._write("Station.Alarms.Active", active)
        await self._write(
            "Station.Alarms.Unacknowledged", [a for a in active if a not in self._acknowledged]
        )

    # -- methods (each as the calling user, through the app) ---------------------------------
    async def _act(self, what: str, do: Callable[[Any], None]) -> ua.StatusCode | list[Any]:
        user = _CALLER.get()
        session = getattr(user, "session", None)
        try:
            await asyncio.to_thread(do, session)
        except StationError as exc:
            denied = type(exc).__name__ == "PermissionDenied"
            log.warning("OPC UA %s by %s refused: %s", what, getattr(user, "name", "?"), exc)
            code = ua.StatusCodes.BadUserAccessDenied if denied else ua.StatusCodes.BadInvalidState
            return ua.StatusCode(code)  # type: ignore[arg-type]  # an int code is the API
        return []

    async def _switch(self, parent: ua.NodeId, product: ua.Variant) -> ua.StatusCode | list[Any]:
        name = str(product.Value if isinstance(product, ua.Variant) else product)
        return await self._act(
            f"SwitchProduct({name})", lambda s: self.actions.switch_product(s, name)
        )

    async def _trigger(self, parent: ua.NodeId) -> ua.StatusCode | list[Any]:
        return await self._act("Trigger", self.actions.trigger)

    async def _acknowledge(self, parent: ua.NodeId, alarm: ua.Variant) -> ua.StatusCode | list[Any]:
        text = str(alarm.Value if isinstance(alarm, ua.Variant) else alarm)
        result = await self._act("Acknowledge", lambda s: self.actions.acknowledge(s, text))
        if result == []:
            self._acknowledged.add(text)
        return result
