"""kpimon's shell: the Faust app, its agents and tables, metrics, HTTP, the CLI."""
