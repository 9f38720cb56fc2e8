"""The Faust app's settings: its broker credentials and `faust.App` keywords.

From kpimon's settings: TLS and SASL as `faust.SASLCredentials` or
`faust.SSLCredentials` (the aiokafka clients kpimon opens itself take
`agents.kafka_client.client_options` instead), and the keywords the app is
made with. Apart from `agents.kafka_client` so that the producer and the
read-back clients, which import that, do not import Faust.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from agents.settings import KafkaSettings, Settings


def broker_credentials(k: KafkaSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust's credentials for SASL (over TLS or not) or TLS alone; None for plaintext."""
    if k.sasl_mechanism:
        context = (
            ssl.create_default_context(cafile=k.ssl_cafile)
            if "SSL" in k.security_protocol
            else None
        )
        password = k.sasl_password.get_secret_value() if k.sasl_password else ""
        if k.sasl_mechanism == "PLAIN":
            return faust.SASLCredentials(
                username=k.sasl_username, password=password, ssl_context=context
            )
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=k.sasl_mechanism,
        )
    if k.security_protocol == "SSL":
        return faust.SSLCredentials(ssl.create_default_context(cafile=k.ssl_cafile))
    return None


def app_options(settings: Settings, broker_url: str, *, embedded: bool) -> dict[str, Any]:
    """`faust.App(settings.worker.app_id, **app_options(...))`."""
    s, k, w = settings.topics, settings.kafka, settings.worker
    return {
        "broker": broker_url,
        "broker_credentials": broker_credentials(k),
        "store": w.store,
        "datadir": w.data_dir,
        "web_enabled": True,
        "web_bind": w.web_host,
        "web_host": w.web_host,
        "web_port": w.web_port,
        "web_in_thread": False,
        "topic_partitions": s.engine_partitions,
        "topic_replication_factor": 1 if embedded else 3,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": k.session_timeout,
        "broker_heartbeat_interval": k.heartbeat_interval,
        "broker_rebalance_timeout": k.rebalance_timeout,
        "broker_commit_interval": 1.0,
        "table_standby_replicas": 0,
        # Engine input is acknowledged only once a snapshot covers it, so
        # shutdown must not wait for every message to be acked.
        "stream_wait_empty": False,
        "producer_max_request_size": max(w.max_message_bytes * 2, 2_097_152),
        "logging_config": None,
    }
