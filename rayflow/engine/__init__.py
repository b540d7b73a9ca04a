"""Executor-agnostic run semantics: plans, the orchestrator, task attempts. No Ray here."""

from rayflow.core.flow import register_runner
from rayflow.engine.local import LocalRunner

register_runner("local", LocalRunner)
