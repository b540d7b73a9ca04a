"""Code that runs in a FlowRunActor's process (one per driver, on the driver's node): the actor
hosting the Orchestrators of its driver's runs, RayExecutor (one Ray task per Work), and
ResourceWaits (works of tasks no node fits yet, waited for in bounded time)."""
