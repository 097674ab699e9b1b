"""Kernel tuning and default schedules (see README.md). Modules, one job each:

- ``defaults``: heuristic CPU schedules applied when nothing is tuned;
- ``pipeline``: the CPU lowering pipeline shared by compile and tune;
- ``tuner``: ``tune_model`` (MetaSchedule with budgets) into a database;
- ``builder`` / ``runner``: warm build workers; local or RPC measurement;
- ``budget``: trial and wall-time budgets, progress; ``database``: directories + target check;
- ``rpc``: tracker checks and remote benchmarks; ``intrinsics``: per-family registration;
- ``cli``: ``hwcompile tune``.

Nothing is imported here, so the CLI starts without loading MetaSchedule.
"""
