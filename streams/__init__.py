"""kpimon's pure KPI engine: event models, windows, KPI state and math.

Nothing in this package imports Faust, aiokafka, prometheus_client or HTTP
code, and nothing reads the clock: time always comes in as an argument.
"""
