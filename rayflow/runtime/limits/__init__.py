"""The limits service.  Its state is engine.limits_state.LimitsState (pure, no Ray, an
injected clock); here are its actor (``actor``: runs in the ``rayflow-limits`` actor's process
on the head node), its client (``client``: any process; this process's limits without Ray)
and rf.limits (``api``)."""
