"""kpimon's shell: CLI, Faust app, embedded broker, simulator, metrics."""
