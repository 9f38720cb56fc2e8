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

from agents.app import Runtime, build_app, pipeline_stats
from agents.settings import Settings, redact, secrets_of

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
    from agents.producer import BrokerUnreachable, probe_broker

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
) -> int:
    """Run a worker until Ctrl-C, SIGTERM or `duration` seconds; returns an exit code."""
    broker = None
    url = settings.kafka.broker
    embedded = url is None
    if embedded:
        from agents.broker import EmbeddedBroker

        # Own process group: Ctrl-C reaches the worker first, which then stops the
        # broker; a broker gone before the worker stops can hang its shutdown.
        broker = EmbeddedBroker(own_process_group=True).start()
        broker.create_topics_sync(topic_plan(settings))
        url = broker.url
        print(
            f"kpimon: embedded broker (Tansu, memory-only) on {broker.bootstrap}", file=sys.stderr
        )
    else:
        assert url is not None
        why = check_broker(settings, url)
        if why is not None:
            print(f"kpimon: cannot reach the broker {redact(url)}: {why}", file=sys.stderr)
            return 1
    try:
        return _run(settings, url, broker, extra, duration, log_file, any_port)
    finally:
        if broker is not None:
            broker.stop()


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
    if not port_is_free(w.web_host, w.web_port):
        if not any_port:
            raise SystemExit(f"kpimon: {w.web_host}:{w.web_port} is in use (set worker.web_port)")
        port = free_port(w.web_host)
        print(f"kpimon: port {w.web_port} is taken; web server on {port}", file=sys.stderr)
        settings = settings.model_copy(update={"worker": w.model_copy(update={"web_port": port})})
        w = settings.worker
    assert url is not None
    app, runtime = build_app(settings, url, embedded=embedded)
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
            worker._on_sigint()

    print(f"kpimon: worker {w.app_id} on {redact(url)}", file=sys.stderr)
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
        stats = pipeline_stats(running.runtime)
        total = sum(stats["events"].values())
        now = time.monotonic()
        rate = (total - last["events"]) / max(now - last["t"], 1e-9)
        last.update(events=total, t=now)
        print(summary_line(running.runtime, rate), file=sys.stderr)


def summary_line(runtime: Runtime, rate: float) -> str:
    parts = [f"{rate:8.0f} ev/s"]
    for view in runtime.views():
        parts.append(f"t={view['watermark'] or '-'}")
        for r in view["last_closed"]:
            if (
                r["kpi"] == "oee"
                and r["scope"] == "line"
                and r["window"] == "1h"
                and r["oee"] is not None
            ):
                parts.append(f"{r['line']} OEE {100 * r['oee']:.0f}%")
        for r in view["last_closed"]:
            if r["kpi"] == "perfect_order" and r["window"] == "1d" and r["direction"] == "outbound":
                rate_po = r["perfect_order_rate"]
                if rate_po is not None:
                    parts.append(f"PO {r['segment']} {100 * rate_po:.0f}%")
            if r["kpi"] == "pchart" and r["chart"].startswith("scrap/") and r["violations"]:
                parts.append(f"{r['chart']} OUT {','.join(r['violations'])}")
    dead = sum(runtime.dead_letters.values())
    if dead:
        parts.append(f"dead letters {dead}")
    return "kpimon | " + " | ".join(parts)
