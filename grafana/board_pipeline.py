"""Pipeline health: workers, throughput, lag, dead letters, lost messages (uid kpimon-pipeline)."""

from __future__ import annotations

from typing import Any

from panels import (
    MACHINE,
    bargauge,
    dashboard,
    field_config,
    fixed,
    override,
    plant_vars,
    query_var,
    stat,
    target,
    thresholds,
    timeseries,
)


def pipeline() -> dict[str, Any]:
    w = 'job=~"$job", instance=~"$instance"'
    rate = "[$__rate_interval]"
    seconds = field_config("s", decimals=0, minmax=None)
    panels = [
        stat(
            "Workers",
            [target(f"up{{{w}}}", "{{instance}}", instant=True)],
            (0, 0, 8, 5),
            field_config(
                "none",
                [(None, "red"), (1, "green")],
                decimals=None,
                minmax=None,
                mappings=[
                    {"type": "value", "options": {"0": {"text": "DOWN"}, "1": {"text": "UP"}}}
                ],
            ),
        ),
        stat(
            "Engine partitions, open orders, machines",
            [
                target(
                    f"sum(kpimon_engine_partitions_assigned{{{w}}})", "partitions", instant=True
                ),
                target(f"sum(kpimon_open_orders{{{w}}})", "open orders", instant=True),
                target(f"sum(kpimon_machines_tracked{{{w}}})", "machines", instant=True),
            ],
            (8, 0, 16, 5),
            field_config("none", decimals=0, minmax=None),
            color_mode="none",
        ),
        timeseries(
            "Events received per second",
            [
                target(
                    f"sum by (topic) (rate(kpimon_events_received_total{{{w}}}{rate}))",
                    "{{topic}} events",
                ),
                target(
                    f"sum by (topic) (rate(kpimon_messages_consumed_total{{{w}}}{rate}))",
                    "{{topic}} messages",
                ),
            ],
            (0, 5, 12, 8),
            field_config("ops", decimals=None, minmax=None),
        ),
        timeseries(
            "Consumer lag per input partition",
            [target(f"kpimon_consumer_lag_messages{{{w}}}", "{{topic}}:{{partition}}")],
            (12, 5, 12, 8),
            field_config("none", decimals=0, minmax=None),
        ),
        timeseries(
            "Dead letters per second, by topic and reason",
            [
                target(
                    f"sum by (topic, reason) (rate(kpimon_dead_letters_total{{{w}}}{rate}))",
                    "{{topic}} {{reason}}",
                )
            ],
            (0, 13, 12, 8),
            field_config("ops", decimals=None, minmax=None),
        ),
        bargauge(
            "Dead letters since start, by topic and reason",
            [
                target(
                    f"sum by (topic, reason) (kpimon_dead_letters_total{{{w}}})",
                    "{{topic}} {{reason}}",
                )
            ],
            (12, 13, 12, 8),
            field_config("none", [(None, "green"), (1, "red")], decimals=0, minmax=None),
        ),
        timeseries(
            "Late and duplicate events per second",
            [
                target(
                    f"sum by (source) (rate(kpimon_late_events_total{{{w}}}{rate}))",
                    "{{source}} late",
                ),
                target(
                    f"sum by (source) (rate(kpimon_duplicate_events_total{{{w}}}{rate}))",
                    "{{source}} duplicate",
                ),
            ],
            (0, 21, 12, 8),
            field_config("ops", decimals=None, minmax=None),
        ),
        timeseries(
            "Time since the last event received, per source",
            [target(f"time() - kpimon_last_event_received_timestamp_seconds{{{w}}}", "{{source}}")],
            (12, 21, 12, 8),
            seconds,
        ),
        timeseries(
            "Event time: behind the wall clock, and window-close delay",
            [
                target(
                    f"time() - kpimon_watermark_timestamp_seconds{{{w}}}",
                    "watermark behind wall clock (partition {{partition}})",
                ),
                target(
                    f"kpimon_window_close_delay_seconds{{{w}}}",
                    "close delay: watermark - closed frontier (partition {{partition}})",
                ),
            ],
            (0, 29, 12, 8),
            seconds,
        ),
        timeseries(
            "Records and alerts published per second",
            [
                target(
                    f"sum by (output) (rate(kpimon_published_messages_total{{{w}}}{rate}))",
                    "{{output}}",
                )
            ],
            (12, 29, 12, 8),
            field_config("ops", decimals=None, minmax=None),
        ),
        bargauge(
            "Machine silence (event time since its last event)",
            [target(f"kpimon_machine_silence_seconds{{{MACHINE}}}", "{{machine}}")],
            (0, 37, 24, 9),
            field_config("s", [(None, "green"), (600, "red")], decimals=0, minmax=None),
        ),
        timeseries(
            "Messages read again, read back, lost (per second)",
            [
                target(
                    f"sum by (topic) (rate(kpimon_redelivered_messages_total{{{w}}}{rate}))",
                    "{{topic}} redelivered",
                ),
                target(
                    f"sum by (stage, outcome) (rate(kpimon_skipped_messages_total{{{w}}}{rate}))",
                    "{{stage}} skipped, {{outcome}}",
                ),
            ],
            (0, 46, 12, 8),
            field_config(
                "ops",
                decimals=None,
                minmax=None,
                overrides=[override(".* lost$", {"color": fixed("red")}, regex=True)],
            ),
            description="Redelivered: input read again after a restart or rebalance (counted "
            "once, nothing sent twice). Skipped: offsets the consumer did not hand over, read "
            "back from the topic (refilled) or gone (lost: KpimonMessagesLost).",
        ),
        bargauge(
            "Skipped, lost and redelivered since start",
            [
                target(
                    f"sum by (stage, outcome) (kpimon_skipped_messages_total{{{w}}})",
                    "{{stage}} skipped, {{outcome}}",
                ),
                target(
                    f"sum by (topic) (kpimon_redelivered_messages_total{{{w}}})",
                    "{{topic}} redelivered",
                ),
            ],
            (12, 46, 6, 8),
            field_config(
                "none",
                [(None, "green"), (1, "yellow")],
                decimals=0,
                minmax=None,
                overrides=[
                    override(
                        ".* lost$",
                        {"thresholds": thresholds([(None, "green"), (1, "red")])},
                        regex=True,
                    )
                ],
            ),
            description="Counts since each worker started; any lost message is red.",
        ),
        stat(
            "Outputs undelivered now",
            [
                target(
                    f"sum by (stage) (kpimon_outputs_undelivered{{{w}}})", "{{stage}}", instant=True
                )
            ],
            (18, 46, 6, 8),
            field_config("none", [(None, "green"), (1, "red")], decimals=0, minmax=None),
            description="Outputs not delivered after 5 sends and being sent again; their "
            "input is held back meanwhile (KpimonOutputsUndelivered, /healthz 503).",
        ),
    ]
    variables = [
        query_var("job", "label_values(kpimon_worker_up, job)"),
        query_var("instance", 'label_values(kpimon_worker_up{job=~"$job"}, instance)'),
        *plant_vars(),
    ]
    return dashboard(
        "kpimon-pipeline",
        "kpimon pipeline health",
        panels,
        variables,
        refresh="30s",
        time_from="now-6h",
        tags=("pipeline",),
        description="Workers, throughput, lag, dead letters, late events, event-time "
        "progress, messages read again, skipped or lost, outputs held back.",
    )
