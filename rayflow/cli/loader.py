"""The CLI's targets: see rayflow.core.loader."""

from rayflow.core.loader import TargetError, load_flow

__all__ = ["TargetError", "load_flow"]
