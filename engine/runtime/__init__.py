"""Running jobs: the engine (submit, dispatch, cancel), the scheduler's order, the memory manager,
per-person limits and metrics."""
