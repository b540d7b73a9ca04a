"""Code that runs in the driver process: the in-process runner and executor, FlowRun, progress bars."""
