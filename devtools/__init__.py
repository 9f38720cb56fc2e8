"""kpimon's development tools: the embedded broker (Tansu), the plant
simulator and the demo's feed, the event producer, and the benchmark.

The worker (`agents/`) never imports these at module level; the CLI imports
them inside the commands that need them (`demo`, `simulate`, `produce`,
`bench`, and `worker` when no broker is configured).
"""
