"""What the UI may do when ``rayflow serve --ui`` serves it: it has the flows loaded (and Ray).

``ServeActions`` runs a served flow now (its parameters validated first),
cancels a live run and resumes a failed, cancelled or crashed one; each run
goes in a thread of the serving process, like a scheduled fire
(``serving.launcher``).  ``rayflow ui`` alone gets no actions: its pages are
read-only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from rayflow.core.parameters import validate_parameters
from rayflow.serving.launcher import ThreadHandle, cancel_here, run_in_thread


class ServeActions:
    def __init__(self, flows: Sequence[Any]):
        self.flows = {f.name: f for f in flows}
        self.on_ray = any(f.options.runner != "local" for f in flows)
        self.handles: list[ThreadHandle] = []

    def names(self) -> list[str]:
        return sorted(self.flows)

    def parameters(self, name: str) -> dict[str, tuple[str, bool]]:
        """The flow's parameters: (its default as the form shows it, JSON; whether it is required).
        A default that is not JSON (a secret, say) is left out: the flow's own default applies."""
        model = self.flows[name].parameters_model
        out = {}
        for key, field in model.model_fields.items():
            try:
                text = "" if field.is_required() else json.dumps(field.default)
            except (TypeError, ValueError):
                text = ""
            out[key] = (text, field.is_required())
        return out

    def run_now(self, name: str, values: Mapping[str, Any]) -> str:
        """Start a run of flow ``name``; a ParameterError (before anything runs) names a bad value."""
        flow = self._flow(name)
        validate_parameters(flow.parameters_model, flow.name, dict(values))
        run_id = uuid.uuid4().hex[:12]
        self.handles.append(run_in_thread(flow, dict(values), run_id))
        return run_id

    def cancel(self, run_id: str) -> None:
        """Cancel a live run: an in-process one of this server, else through its actor on Ray."""
        try:
            cancel_here(run_id, on_ray=self.on_ray)
        except LookupError:
            raise LookupError("it is not going in this server") from None

    def resume(self, run_id: str, flow_name: str) -> None:
        flow = self._flow(flow_name)
        from rayflow.runs.resume import check_resumable, resume

        check_resumable(run_id)  # refusals (it succeeded, it is still running) before the thread
        self.handles.append(ThreadHandle(run_id, lambda: resume(run_id, flow), on_ray=flow.options.runner != "local"))

    def _flow(self, name: str) -> Any:
        flow = self.flows.get(name)
        if flow is None:
            raise KeyError(f"flow {name!r} is not served here")
        return flow
