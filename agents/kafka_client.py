"""Kafka client settings of the worker: aiokafka connection options (TLS,
SASL) from the settings, and the probe that says whether a broker answers as
Kafka before the worker (or `kpimon produce`) starts on it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from aiokafka import AIOKafkaClient

from agents.settings import KafkaSettings


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection options from the settings (TLS, SASL)."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if "SSL" in kafka.security_protocol:
        import ssl

        options["ssl_context"] = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return options


class BrokerUnreachable(RuntimeError):
    """The broker did not answer as a Kafka broker within the connect timeout."""


async def probe_broker(bootstrap: str, kafka: KafkaSettings, timeout: float | None = None) -> None:
    """Raise `BrokerUnreachable`, with the reason, unless the broker at `bootstrap`
    (`host:port[;host:port]`) answers a Kafka metadata request (after TLS and SASL
    as configured) within `timeout` seconds (default: `kafka.connect_timeout`).

    A TCP connection to each host first, so a refused or unresolvable address is
    named as such; then a Kafka bootstrap, so a port that is open but is not
    Kafka (or never answers) gives up at the deadline instead of hanging.
    """
    timeout = kafka.connect_timeout if timeout is None else timeout
    hosts = [h.strip() for h in bootstrap.replace(";", ",").split(",") if h.strip()]
    deadline = asyncio.get_running_loop().time() + timeout
    reasons = []
    for host in hosts:
        name, _, port = host.rpartition(":")
        left = max(deadline - asyncio.get_running_loop().time(), 0.001)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(name.strip("[]"), int(port)), left
            )
        except (TimeoutError, OSError, ValueError) as exc:
            reason = _why(exc)
            reasons.append(f"{host}: {reason}")
            continue
        writer.close()
        break
    else:
        raise BrokerUnreachable(f"cannot connect ({'; '.join(reasons) or 'no host given'})")
    # aiokafka logs why each host failed (and raises only "Unable to bootstrap"):
    # keep those lines for the reason, and off stderr, where Python would print
    # them for want of a handler.
    heard = _Heard()
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addHandler(heard)
    client = AIOKafkaClient(
        bootstrap_servers=hosts,
        request_timeout_ms=max(int(timeout * 1000), 1),
        **client_options(kafka),
    )
    try:
        left = max(deadline - asyncio.get_running_loop().time(), 0.001)
        await asyncio.wait_for(client.bootstrap(), left)
    except TimeoutError:
        raise BrokerUnreachable(
            f"no Kafka answer within {timeout:g} s (connect timeout; is it a Kafka broker?)"
        ) from None
    except Exception as exc:  # aiokafka's SASL code raises more than KafkaError
        why = heard.messages[-1] if heard.messages else f"{type(exc).__name__}: {exc}"
        what = "a Kafka broker"
        if kafka.sasl_mechanism:
            what += f" that takes these {kafka.sasl_mechanism} credentials"
        raise BrokerUnreachable(f"it did not answer as {what} ({why})") from None
    finally:
        aiokafka_log.removeHandler(heard)
        await client.close()


def _why(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer (connect timeout)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


class _Heard(logging.Handler):
    """Collects aiokafka's error lines during a probe."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
