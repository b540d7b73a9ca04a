"""Code that runs in the driver process (the process that called ``flow.run``, ``rayflow run``
or ``rayflow submit``, or any process joined to the cluster that looks a run up): RayRunner,
connecting to Ray, auth checks, Ray Jobs, the resource check, handles on FlowRunActors."""
