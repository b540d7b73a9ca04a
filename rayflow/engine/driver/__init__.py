"""Code of the engine that runs in the driver process: LocalExecutor (the in-process runner's
thread pool; the runner itself is runs.local.LocalRunner), the generator feeder of the
in-process runner, FlowRun (what ``flow.run()`` returns) and the progress bars."""
