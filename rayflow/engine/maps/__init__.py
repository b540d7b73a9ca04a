"""The orchestrator side of mapped tasks: the coordinator of a run's maps and one map's run."""
