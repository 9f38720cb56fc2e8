"""Running a worker: against a Kafka cluster, or on the embedded broker.

`kpimon worker` with no broker configured starts the embedded broker (Tansu,
memory-only) on a free loopback port. `kpimon demo` adds the plant
simulator and a live summary in the terminal.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from agents import collector
from agents.app import build_app
from agents.private_api import stop_worker
from agents.runtime import Runtime, applied_events, pipeline_stats
from agents.settings import Settings, redact, secrets_of
from streams.records import OeeRecord, PChartRecord, PerfectOrderRecord, typed

log = logging.getLogger("kpimon")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As the web server binds: connections of a previous run in TIME_WAIT don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def topic_plan(settings: Settings) -> dict[str, int]:
    """Topics kpimon creates on the embedded broker, with partition counts."""
    t = settings.topics
    plan = dict.fromkeys(t.sources(), t.input_partitions)
    plan |= {t.engine: t.engine_partitions, t.windows: 1, t.alerts: 1, t.dead_letter: 1}
    return plan


#: A worker on the embedded broker writes the broker's URL here (in
#: `worker.data_dir`), so `kpimon produce` and `kpimon simulate` without a broker
#: send to it.
EMBEDDED_BROKER_FILE = "embedded-broker"


def embedded_broker_url(settings: Settings) -> str | None:
    """The URL of the embedded broker of a worker running with the same data dir."""
    path = Path(settings.worker.data_dir) / EMBEDDED_BROKER_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def check_broker(settings: Settings, url: str) -> str | None:
    """None when the broker at `url` answers as Kafka within
    `kafka.connect_timeout`, else the reason, fit to print."""
    from agents.kafka_client import BrokerUnreachable, probe_broker

    # A loop of its own, not set as current: Faust's worker makes its own later.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(probe_broker(url.removeprefix("kafka://"), settings.kafka))
    except BrokerUnreachable as exc:
        return redact(str(exc), secrets_of(settings))
    finally:
        loop.close()
    return None


@dataclass
class Running:
    """What a started worker exposes to the code that started it."""

    app: faust.App
    runtime: Runtime
    bootstrap: str
    web_url: str
    broker: Any = None


def start_worker(
    settings: Settings,
    *,
    extra: Callable[[Running], None] | None = None,
    duration: float | None = None,
    log_file: str | None = None,
    any_port: bool = False,
    embedded_broker: Callable[[], Any] | None = None,
) -> int:
    """Run a worker until Ctrl-C, SIGTERM or `duration` seconds; returns an exit code.

    With no `kafka.broker` in the settings, `embedded_broker()` starts a broker
    (the CLI passes `devtools.broker.start_for_worker`: the worker itself
    imports no development tool); the worker stops it on the way out.
    """
    broker = None
    url = settings.kafka.broker
    embedded = url is None
    if embedded and embedded_broker is None:
        raise ValueError("no kafka.broker in the settings and no embedded broker to start")
    settings = _web_port(settings, any_port)
    if not embedded:
        assert url is not None
        why = check_broker(settings, url)
        if why is not None:
            print(f"kpimon: cannot reach the broker {redact(url)}: {why}", file=sys.stderr)
            return 1
    w = settings.worker
    # The wall first: the one URL to open.
    print(f"kpimon: wall http://{w.web_host}:{w.web_port}/", file=sys.stderr, flush=True)
    if embedded:
        assert embedded_broker is not None
        broker = embedded_broker()
        broker.create_topics_sync(topic_plan(settings))
        url = broker.url
        print(
            f"kpimon: embedded broker (Tansu, memory-only) on {broker.bootstrap}", file=sys.stderr
        )
        if w.role != "all":  # the other half must be told where this broker is
            other = "engine" if w.role == "ingest" else "ingest"
            print(
                f"kpimon: this worker runs {w.role} only: start the {other} worker with "
                f"--role {other} --broker {url}",
                file=sys.stderr,
            )
    assert url is not None
    try:
        return _run(settings, url, broker, extra, duration, log_file, any_port)
    finally:
        if broker is not None:
            broker.stop()


def _web_port(settings: Settings, any_port: bool) -> Settings:
    """The settings with a web port that is free (any free one if `any_port`)."""
    w = settings.worker
    if port_is_free(w.web_host, w.web_port):
        return settings
    if not any_port:
        raise SystemExit(f"kpimon: {w.web_host}:{w.web_port} is in use (set worker.web_port)")
    port = free_port(w.web_host)
    print(f"kpimon: port {w.web_port} is taken; web server on {port}", file=sys.stderr)
    return settings.model_copy(update={"worker": w.model_copy(update={"web_port": port})})


def _run(
    settings: Settings,
    url: str,
    broker: Any,
    extra: Callable[[Running], None] | None,
    duration: float | None,
    log_file: str | None,
    any_port: bool,
) -> int:
    embedded = broker is not None
    w = settings.worker
    assert url is not None
    app, runtime = build_app(settings, url, embedded=embedded)
    collector.for_long_lived_state()
    bootstrap = url.removeprefix("kafka://")
    running = Running(app, runtime, bootstrap, f"http://{w.web_host}:{w.web_port}", broker)
    if extra is not None:
        extra(running)
    Path(w.data_dir).mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(
        app,
        loglevel=w.log_level,
        quiet=True,
        logfile=log_file or str(Path(w.data_dir) / "worker.log"),
        # The live summary is for the terminal, not the log file.
        redirect_stdouts=False,
    )
    # Faust's start-up spinner sets the root logger to DEBUG, so every debug
    # call of aiokafka and Faust builds a record: measurable CPU, no use here.
    worker.spinner = None
    if duration is not None:

        @app.task
        async def stop_later() -> None:
            await asyncio.sleep(duration)
            stop_worker(worker)

    role = "" if w.role == "all" else f" ({w.role} only)"
    print(f"kpimon: worker {w.app_id}{role} on {redact(url)}", file=sys.stderr)
    print(
        f"kpimon: live KPIs {running.web_url}/kpi   metrics {running.web_url}/metrics   "
        f"health {running.web_url}/healthz",
        file=sys.stderr,
    )
    pointer = Path(w.data_dir) / EMBEDDED_BROKER_FILE
    if embedded:
        pointer.write_text(url + "\n")
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if embedded and embedded_broker_url(settings) == url:
            pointer.unlink(missing_ok=True)
    return 0


def _ts_us(text: str) -> int:
    from datetime import datetime

    from streams.timeutil import to_us

    return to_us(datetime.fromisoformat(text))


def add_console(running: Running, every: float = 3.0) -> None:
    """Print a short live summary to the terminal."""
    last = {"events": 0, "t": time.monotonic()}

    @running.app.timer(every)
    async def show() -> None:
        runtime = running.runtime
        if runtime.settings.worker.role == "engine":  # it reads no input: what it applied
            total = applied_events(runtime)
        else:
            total = sum(pipeline_stats(runtime)["events"].values())
        now = time.monotonic()
        rate = (total - last["events"]) / max(now - last["t"], 1e-9)
        last.update(events=total, t=now)
        print(summary_line(running.runtime, rate), file=sys.stderr)


SUMMARY_WIDTH = 100
"""The terminal summary line never runs wider than this."""


def summary_line(runtime: Runtime, rate: float) -> str:
    """`kpimon    12 ev/s  2026-12-05T07:34Z | OEE line-1 71% line-2 51% | PO A 100% B 90%
    | OOC line-1 WE4 | dead letters 2`: events per second into the worker, the
    watermark (to the minute), the last closed hour's OEE per line, yesterday's
    perfect-order rate per outbound segment, the scrap p-charts out of control
    (with their rules) and the dead letters. At most `SUMMARY_WIDTH` columns:
    the parts that do not fit are left out (the wall at `/` shows everything)."""
    views = runtime.views()
    marks = [v["watermark"] for v in views if v["watermark"]]
    clock = max(m[:16] for m in marks) + "Z" if marks else "-"
    oee: dict[str, float] = {}
    orders: dict[str, float] = {}
    out: dict[str, list[str]] = {}
    for view in views:
        for r in map(typed, view["last_closed"]):
            if isinstance(r, OeeRecord) and r["scope"] == "line" and r["window"] == "1h":
                if r["oee"] is not None:
                    oee[r["line"]] = r["oee"]
            elif (
                isinstance(r, PerfectOrderRecord)
                and r["window"] == "1d"
                and r["direction"] == "outbound"
            ):
                if r["perfect_order_rate"] is not None:
                    orders[r["segment"]] = r["perfect_order_rate"]
            elif (
                isinstance(r, PChartRecord) and r["chart"].startswith("scrap/") and r["violations"]
            ):
                out[r["chart"].rsplit("/", 1)[-1]] = r["violations"]
    parts = [f"kpimon {rate:6.0f} ev/s {clock}"]
    if oee:
        parts.append("OEE " + " ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(oee.items())))
    if orders:
        parts.append("PO " + " ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(orders.items())))
    if out:
        parts.append("OOC " + " ".join(f"{k} {','.join(v)}" for k, v in sorted(out.items())))
    dead = sum(runtime.dead_letters.values())
    if dead:
        parts.append(f"dead letters {dead}")
    line = parts[0][:SUMMARY_WIDTH]
    for part in parts[1:]:  # in order of priority: a part that does not fit is left out
        if len(line) + 3 + len(part) <= SUMMARY_WIDTH:
            line += " | " + part
    return line
