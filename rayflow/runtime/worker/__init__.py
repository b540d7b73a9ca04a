"""Code that runs in a Ray worker, inside a task: the holders of named limits
(``limit_holders``: rf.concurrency, rf.rate_limit, rf.rate_limit_async), clients of the
limits service (runtime.limits.client)."""
