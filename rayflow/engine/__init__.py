"""Executor-agnostic run semantics: plans, the orchestrator, task attempts. No Ray here."""
