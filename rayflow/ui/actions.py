"""What the UI may do when ``rayflow serve --ui`` serves it: it has the flows loaded (and Ray).

``ServeActions`` runs a served flow now (its parameters validated first),
cancels a live run and resumes a failed, cancelled or crashed one; each run
goes in a thread of the serving process, like a scheduled fire.  ``rayflow
ui`` alone gets no actions: its pages are read-only.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from rayflow.core.parameters import validate_parameters


class ServeActions:
    def __init__(self, flows: Sequence[Any]):
        self.flows = {f.name: f for f in flows}
        self._threads: list[threading.Thread] = []

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
        flow = self.flows.get(name)
        if flow is None:
            raise KeyError(f"flow {name!r} is not served here")
        validate_parameters(flow.parameters_model, flow.name, dict(values))
        run_id = uuid.uuid4().hex[:12]
        self._start(lambda: flow.with_options(run_id=run_id, progress=False).run(**values), run_id)
        return run_id

    def cancel(self, run_id: str) -> None:
        """Cancel a live run: an in-process one of this server, else through its actor on Ray."""
        from rayflow.runs.local import cancel_local

        if cancel_local(run_id):
            return
        if not any(f.options.runner == "ray" for f in self.flows.values()):
            raise LookupError("it is not going in this server")
        from rayflow.runtime import cancel_run

        cancel_run(run_id, wait=0)

    def resume(self, run_id: str, flow_name: str) -> None:
        flow = self.flows.get(flow_name)
        if flow is None:
            raise KeyError(f"flow {flow_name!r} is not served here")
        from rayflow.runs.resume import check_resumable, resume

        check_resumable(run_id)  # refusals (it succeeded, it is still running) before the thread
        self._start(lambda: resume(run_id, flow), run_id)

    def _start(self, body: Any, run_id: str) -> None:
        def go() -> None:
            try:
                body()
            except BaseException:  # noqa: BLE001 - the run's own failure is in the history
                pass

        thread = threading.Thread(target=go, name=f"rayflow-ui-run-{run_id}", daemon=True)
        thread.start()
        self._threads.append(thread)
