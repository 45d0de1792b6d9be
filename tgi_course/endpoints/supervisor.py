"""The endpoint lifecycle: one state machine per endpoint, driving one server process.

Everything here runs on the control plane's event loop (a single thread), so state changes need no
thread locks; a per-endpoint asyncio lock serialises the actions that start or stop a process.
Server processes are spawned on this same long-lived thread (see :mod:`.process` for why).

    create ─► pending ─► initializing ─► running ◄──────────────┐
                 │             │            │ pause / scale_to_zero / idle timeout
                 └─► failed ◄──┘            ▼                    │
                                paused, scaledToZero ─ resume or a request (scaledToZero only) ─┘
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import signal
import time

import httpx

from . import availability, process
from . import spec as specs
from .errors import EndpointExists, EndpointNotFound, NotAllowed, Unavailable
from .records import ACTIVE_STATES, EndpointRecord, State, now_iso
from .settings import ControlPlaneSettings
from .store import EndpointStore

log = logging.getLogger("tgi_course.endpoints")

Key = tuple[str, str]
_WATCH_INTERVAL_S = 0.5
_HEALTH_POLL_S = 0.25


class Supervisor:
    def __init__(self, store: EndpointStore, settings: ControlPlaneSettings, base_url: str) -> None:
        self.store = store
        self.settings = settings
        self.base_url = base_url
        # The one credential of the API and of protected endpoints: this user's token (see store.user_token).
        self.token = store.user_token()
        self.records: dict[Key, EndpointRecord] = {}
        self._procs: dict[Key, object] = {}  # Key -> subprocess.Popen of a started server
        self._boots: dict[Key, asyncio.Task] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._inflight: dict[Key, int] = {}
        self._last_activity: dict[Key, float] = {}  # time.monotonic() of the last request or start
        self._waking: set[Key] = set()  # scaled-to-zero endpoints started by a request
        self._watcher: asyncio.Task | None = None

    # --- start and stop ------------------------------------------------------------------------
    async def open(self) -> list[str]:
        """Load the records on disk; report (and never silently keep running) those of a previous session."""
        stale: list[str] = []
        for record in self.store.load_all():
            self.records[record.key] = record
            if record.pid is not None and process.kill_stale(record.pid, record.pid_started, f"{record.namespace}/{record.name}"):
                self.store.note(record.namespace, record.name, f"killed server pid {record.pid} left by an earlier session")
            if record.state in ACTIVE_STATES:
                stale.append(f"{record.namespace}/{record.name}")
                self._clear_process(record)
                self._set(
                    record,
                    State.SCALED_TO_ZERO,
                    f"Its server process ended with the previous control plane (a restarted kernel or Python session) "
                    f"while the endpoint was {record.state.value}; it is scaled to zero now: "
                    "the next request, or .resume(), starts it again",
                    url=True,
                )
            elif record.pid is not None:
                self._clear_process(record)
                self.store.save(record)
        if stale:
            log.warning("endpoints from a previous session, now scaled to zero: %s", ", ".join(stale))
        self._watcher = asyncio.create_task(self._watch())
        return stale

    async def close(self) -> None:
        """Stop every server. Records stay on disk; :meth:`open` reports them next time."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for task in list(self._boots.values()):
            task.cancel()
        for task in list(self._boots.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        procs, self._procs = list(self._procs.values()), {}
        await asyncio.gather(*(asyncio.to_thread(process.stop, proc) for proc in procs))

    # --- queries ------------------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> EndpointRecord:
        record = self.records.get((namespace, name))
        if record is None:
            raise EndpointNotFound(f"Inference Endpoint '{name}' not found in namespace '{namespace}'")
        return record

    def list(self, namespace: str) -> list[EndpointRecord]:
        return [r for (ns, _), r in sorted(self.records.items()) if ns == namespace]

    # --- actions --------------------------------------------------------------------------------
    async def create(self, namespace: str, payload: object) -> EndpointRecord:
        name, spec = specs.parse_create(payload)
        if (namespace, name) in self.records:
            raise EndpointExists(
                f"An Inference Endpoint named '{name}' already exists in namespace '{namespace}': "
                "pick another name, or delete the existing one first"
            )
        record = EndpointRecord(namespace, name, spec, created_by=self.settings.user)
        self.records[record.key] = record
        self.store.save(record)
        self.store.note(namespace, name, f"created (repository={spec['model']['repository']}, type={spec['type']})")
        self._start_boot(record, State.INITIALIZING, State.FAILED)
        return record

    async def update(self, namespace: str, name: str, payload: object) -> EndpointRecord:
        async with self._lock((namespace, name)):
            record = self.get(namespace, name)
            new_spec = specs.merge_update(record.spec, payload)
            restart = specs.server_changed(record.spec, new_spec)
            record.spec = new_spec
            if restart and record.state not in (State.PAUSED, State.SCALED_TO_ZERO):
                # Paused and scaled-to-zero endpoints pick the new configuration up when they next start.
                await self._stop_server(record)
                self._start_boot(record, State.UPDATING, State.UPDATE_FAILED)
            else:
                self._set(record, record.state, record.message)
            return record

    async def delete(self, namespace: str, name: str) -> None:
        async with self._lock((namespace, name)):
            record = self.get(namespace, name)
            await self._stop_server(record)
            del self.records[record.key]
            self._locks.pop(record.key, None)
            self.store.delete(namespace, name)

    async def pause(self, namespace: str, name: str) -> EndpointRecord:
        async with self._lock((namespace, name)):
            record = self.get(namespace, name)
            if record.state is not State.PAUSED:
                await self._stop_server(record)
                self._set(record, State.PAUSED, "Paused: no server runs and nothing is billed. Start it again with .resume()", url=False)
            return record

    async def resume(self, namespace: str, name: str) -> EndpointRecord:
        async with self._lock((namespace, name)):
            record = self.get(namespace, name)
            if record.state is State.RUNNING:
                raise NotAllowed(f"Inference Endpoint '{name}' is already running")
            if record.state in ACTIVE_STATES:
                return record  # already starting: resuming again changes nothing
            await self._stop_server(record)
            self._start_boot(record, State.INITIALIZING, State.FAILED)
            return record

    async def scale_to_zero(self, namespace: str, name: str) -> EndpointRecord:
        async with self._lock((namespace, name)):
            record = self.get(namespace, name)
            if record.state is State.PAUSED:
                raise NotAllowed(f"Inference Endpoint '{name}' is paused: a paused endpoint cannot scale to zero. Resume it first")
            if record.state in (State.FAILED, State.UPDATE_FAILED):
                raise NotAllowed(
                    f"Inference Endpoint '{name}' is in state '{record.state.value}': fix it with .update(...) or .resume() first"
                )
            if record.state is not State.SCALED_TO_ZERO:
                await self._stop_server(record)
                self._set(record, State.SCALED_TO_ZERO, "Scaled to zero: no server runs; the next request starts it again", url=True)
            return record

    # --- the proxy's view ------------------------------------------------------------------------
    def serving(self, record: EndpointRecord) -> tuple[int, str]:
        """The port to forward to and the server's API key, or :class:`Unavailable` saying why not (and waking a
        scaled-to-zero endpoint)."""
        key, name = record.key, record.name
        if record.state is State.RUNNING and record.port is not None and record.api_key and key in self._procs:
            return record.port, record.api_key
        if record.state is State.SCALED_TO_ZERO and not self._lock(key).locked():
            self._waking.add(key)
            self._start_boot(record, State.INITIALIZING, State.FAILED)
        if key in self._waking and record.state in ACTIVE_STATES:
            raise Unavailable(f"Inference Endpoint '{name}' is scaled to zero, starting: retry in a few seconds", retry_after=2)
        if record.state in ACTIVE_STATES:
            raise Unavailable(f"Inference Endpoint '{name}' is {record.state.value}: retry in a few seconds", retry_after=2)
        if record.state is State.PAUSED:
            raise Unavailable(f"Inference Endpoint '{name}' is paused: resume it with endpoint.resume()")
        raise Unavailable(f"Inference Endpoint '{name}' is {record.state.value}: {record.message}")

    def request_started(self, key: Key) -> None:
        self._inflight[key] = self._inflight.get(key, 0) + 1
        self._last_activity[key] = time.monotonic()

    def request_finished(self, key: Key) -> None:
        self._inflight[key] = max(0, self._inflight.get(key, 0) - 1)
        self._last_activity[key] = time.monotonic()

    def accepts(self, record: EndpointRecord, token: str | None) -> bool:
        """Whether a caller with this Bearer token may use the endpoint's URL.

        On the real service an authenticated endpoint wants a Hub token with access to its namespace; here the
        one user has one token, the control plane's.
        """
        if not specs.requires_token(record.spec):
            return True
        return self.valid_token(token)

    def valid_token(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    def log_tail(self, key: Key, lines: int = 15) -> str:
        """The end of an endpoint's log, with the secrets the control plane knows masked (defence in depth:
        neither the server nor the control plane writes them there)."""
        text = self.store.log_tail(*key, lines=lines)
        record = self.records.get(key)
        for secret in (self.token, record.api_key if record is not None else None):
            if secret:
                text = text.replace(secret, "***")
        return text

    def longest_stop_s(self) -> float:
        """How long stopping every server may take: the longest SIGTERM-to-SIGKILL wait of those running."""
        return max((getattr(proc, "stop_grace_s", 0.0) for proc in self._procs.values()), default=0.0)

    # --- internals -------------------------------------------------------------------------------
    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _set(self, record: EndpointRecord, state: State, message: str, *, url: bool | None = None) -> None:
        record.state, record.message, record.updated_at = state, message, now_iso()
        if url is not None:
            record.url_visible = url
        if state is State.RUNNING or state not in ACTIVE_STATES:
            self._waking.discard(record.key)  # the wake-up is over, one way or the other
        if record.key in self.records:  # a deleted endpoint must not be written back
            self.store.save(record)

    def _fail(self, record: EndpointRecord, state: State, message: str) -> None:
        self.store.note(record.namespace, record.name, message)
        self._clear_process(record)
        self._set(record, state, message, url=False)

    @staticmethod
    def _clear_process(record: EndpointRecord) -> None:
        record.pid = record.pid_started = record.port = record.api_key = None

    def _start_boot(self, record: EndpointRecord, starting: State, failed: State) -> None:
        key = record.key
        first = State.UPDATING if starting is State.UPDATING else State.PENDING
        self._set(record, first, f"Checking that {specs.model_id(record.spec)} is available offline")
        task = asyncio.create_task(self._boot(record, starting, failed))
        self._boots[key] = task

        def done(finished: asyncio.Task) -> None:
            if self._boots.get(key) is finished:
                del self._boots[key]
            if not finished.cancelled() and finished.exception() is not None:
                log.error("starting %s failed", key, exc_info=finished.exception())
                proc = self._procs.pop(key, None)
                if proc is not None:  # a server may have been started before the error: do not leave it behind
                    asyncio.get_running_loop().run_in_executor(None, process.stop, proc)
                self._fail(record, failed, f"Internal error of the local control plane: {finished.exception()!r}")

        task.add_done_callback(done)

    async def _boot(self, record: EndpointRecord, starting: State, failed: State) -> None:
        key = record.key
        model_id = specs.model_id(record.spec)
        problem = await asyncio.to_thread(availability.problem_with, model_id, record.spec["model"].get("task"))
        if problem:
            self._fail(record, failed, problem)
            return
        port = process.free_port()
        api_key = secrets.token_urlsafe(32)  # a new one per start: a key is only good while its server runs
        # The parent's environment minus the control plane's token (use_local_endpoints sets it as HF_TOKEN).
        base = {name: value for name, value in os.environ.items() if value != self.token}
        env = process.build_env(
            base,
            specs.server_env(record.spec),
            endpoint=f"{key[0]}/{key[1]}",
            model_id=model_id,
            host="127.0.0.1",
            port=port,
            api_key=api_key,
        )
        proc = process.spawn(self.settings.server_command, env, self.store.log_path(*key))
        self._procs[key] = proc
        record.pid, record.port, record.pid_started = proc.pid, port, process.started_at(proc.pid)
        record.api_key = api_key
        self._set(record, starting, f"Starting the local server for {model_id} (pid {proc.pid})")

        route = specs.health_route(record.spec)
        deadline = time.monotonic() + self.settings.startup_timeout_s
        # The key goes with the health checks too: a custom health route may be one that wants it.
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(timeout=2.0, trust_env=False, headers=headers) as client:
            while True:
                code = proc.poll()
                if code is not None:
                    self._procs.pop(key, None)
                    tail = self.log_tail(key)
                    self._fail(record, failed, f"The server process exited with code {code} while starting. Last log lines:\n{tail}")
                    return
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}{route}")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    self._procs.pop(key, None)
                    await asyncio.to_thread(process.stop, proc)
                    self._fail(
                        record,
                        failed,
                        f"The server did not answer {route} within {self.settings.startup_timeout_s:.0f} s "
                        f"(TGI_COURSE_ENDPOINTS_STARTUP_TIMEOUT). Last log lines:\n{self.log_tail(key)}",
                    )
                    return
                await asyncio.sleep(_HEALTH_POLL_S)
        self._last_activity[key] = time.monotonic()
        self.store.note(record.namespace, record.name, f"running (pid {proc.pid}, port {port})")
        self._set(record, State.RUNNING, "Endpoint is running", url=True)

    async def _stop_server(self, record: EndpointRecord) -> None:
        key = record.key
        task = self._boots.pop(key, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        proc = self._procs.pop(key, None)
        if proc is not None:
            ended_before = proc.poll()
            started = time.monotonic()
            code = await asyncio.to_thread(process.stop, proc)
            took = time.monotonic() - started
            if ended_before is not None:
                how = f"it had exited already (code {ended_before})"
            elif code == -signal.SIGKILL:
                how = f"killed with SIGKILL: it did not exit within {getattr(proc, 'stop_grace_s', 0):.0f} s of SIGTERM"
            else:
                how = f"exited with code {code} {took:.1f} s after SIGTERM"
            if record.key in self.records:
                self.store.note(record.namespace, record.name, f"stopped the server (pid {proc.pid}): {how}")
        self._clear_process(record)

    async def _watch(self) -> None:
        """Notice servers that died on their own, and scale idle endpoints to zero."""
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            try:
                self._reap_dead()
                await self._scale_idle()
            except Exception:  # the watcher must outlive any one bad record
                log.exception("endpoint watcher error")

    def _reap_dead(self) -> None:
        for key, proc in list(self._procs.items()):
            if key in self._boots or proc.poll() is None:  # a starting server is watched by its boot task
                continue
            del self._procs[key]
            record = self.records.get(key)
            if record is not None:
                self._fail(
                    record,
                    State.FAILED,
                    f"The server process exited unexpectedly with code {proc.returncode}; .resume() starts it again. "
                    f"Last log lines:\n{self.log_tail(key)}",
                )

    async def _scale_idle(self) -> None:
        now = time.monotonic()
        for key, record in list(self.records.items()):
            minutes = specs.idle_timeout_minutes(record.spec)
            if record.state is not State.RUNNING or not minutes or self._inflight.get(key, 0):
                continue
            if now - self._last_activity.get(key, now) < minutes * self.settings.minute_seconds or self._lock(key).locked():
                continue
            async with self._lock(key):
                if record.state is State.RUNNING and not self._inflight.get(key, 0):
                    await self._stop_server(record)
                    self._set(
                        record,
                        State.SCALED_TO_ZERO,
                        f"Scaled to zero after {minutes} minute(s) without requests; the next request starts it again",
                        url=True,
                    )
