"""What the UI may do when ``rayflow serve --ui`` serves it: it has the flows loaded (and Ray).

``ServeActions`` runs a served flow now (its parameters validated first),
cancels a live run and resumes a failed, cancelled or crashed one; each run
goes in a thread of the serving process, like a scheduled fire
(``serving.launcher``).  ``rayflow ui`` alone gets no actions: its pages are
read-only.

Until the server has joined Ray (``mark_ready``), ``starting()`` is true and the
UI answers actions 503: a run started meanwhile would call ``ray.init`` from a
second thread.  A run now is in the history (PENDING) before its id is
returned; a run or resume whose thread fails before the run records its end is
logged (``rayflow.serve``), recorded FAILED with the error where it had not
started, and shown on its page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rayflow.core.parameters import parameter_values, text_of_value, validate_parameters
from rayflow.paths import new_run_id
from rayflow.serving.launcher import ThreadHandle, cancel_here
from rayflow.store import RunStore, rayflow_home
from rayflow.states import error_text

logger = logging.getLogger("rayflow.serve")
STARTING_MESSAGE = "starting (run now from the UI)"
CANCEL_WAIT_SECONDS = 30.0  # a cancel of a run this server is still starting waits this long for it


class NotReady(RuntimeError):
    """An action asked for before the server has joined Ray."""


class ServeActions:
    def __init__(self, flows: Sequence[Any], *, ready: bool = True):
        self.flows = {f.name: f for f in flows}
        self.on_ray = any(f.options.runner != "local" for f in flows)
        self.handles: list[ThreadHandle] = []
        self._ready = threading.Event()
        self._errors: dict[str, str] = {}  # run id -> why its action's thread failed
        if ready:
            self._ready.set()

    def mark_ready(self) -> None:
        """The server has joined Ray: actions may start runs now."""
        self._ready.set()

    def starting(self) -> bool:
        return not self._ready.is_set()

    def error_of(self, run_id: str) -> str | None:
        """Why the last action on ``run_id`` failed in its thread, if it did."""
        return self._errors.get(run_id)

    def names(self) -> list[str]:
        return sorted(self.flows)

    def parameters(self, name: str) -> dict[str, tuple[str, bool]]:
        """The flow's parameters: (its default as the form shows it, the text that reads back as it:
        a str as it is, else JSON; whether it is required).  A default that is not JSON (a secret,
        say) is left out: the flow's own default applies."""
        model = self.flows[name].parameters_model
        out = {}
        for key, field in model.model_fields.items():
            text = "" if field.is_required() else text_of_value(field.annotation, field.default)
            out[key] = (text, field.is_required())
        return out

    def run_now(self, name: str, values: Mapping[str, Any] | None = None, *, text: Mapping[str, str] | None = None) -> str:
        """Start a run of flow ``name`` with typed ``values`` and/or ``text`` ones (the run-now form's
        fields, read as ``-p`` reads them: ``core.parameters.parameter_values``); a ParameterError
        (before anything runs) names a bad value."""
        self._check_ready()
        flow = self._flow(name)
        values = parameter_values(flow.parameters_model, typed=values, text=text)
        checked = validate_parameters(flow.parameters_model, flow.name, dict(values))  # secrets as secrets: recorded ***
        run_id = new_run_id()
        RunStore(rayflow_home()).reserve(run_id, flow.name, checked, STARTING_MESSAGE)  # in the history at once
        chosen = flow.with_options(run_id=run_id, progress=False)
        body = self._watched("run now", run_id, lambda: chosen.run(**values), flow=flow.name, params=checked)
        self.handles.append(ThreadHandle(run_id, body, on_ray=flow.options.runner != "local"))
        return run_id

    def cancel(self, run_id: str) -> None:
        """Cancel a live run: an in-process one of this server, else through its actor on Ray.
        A run this server's action has just started may not have reached its runner yet (its id
        is answered at once): the cancel is tried again while that action's thread lives."""
        self._check_ready()
        ours = [h for h in self.handles if h.run_id == run_id and not h.done()]
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while True:
            try:
                cancel_here(run_id, on_ray=self.on_ray)
                return
            except LookupError:
                if not any(not h.done() for h in ours) or time.monotonic() > deadline:
                    raise LookupError("it is not going in this server") from None
            time.sleep(0.05)

    def resume(self, run_id: str, flow_name: str) -> None:
        self._check_ready()
        flow = self._flow(flow_name)
        from rayflow.runs.resume import check_resumable, resume

        check_resumable(run_id)  # refusals (it succeeded, it is still running) before the thread
        self._errors.pop(run_id, None)
        body = self._watched("resume", run_id, lambda: resume(run_id, flow))
        self.handles.append(ThreadHandle(run_id, body, on_ray=flow.options.runner != "local"))

    def _check_ready(self) -> None:
        if self.starting():
            raise NotReady("the server is starting (joining Ray): try again in a moment")

    def _watched(self, what: str, run_id: str, body: Any, **placeholder: Any) -> Any:
        """``body`` as an action's thread runs it: a failure is logged, kept for the run's page,
        and recorded FAILED where the run had not started (its placeholder, ``placeholder``)."""

        def run() -> Any:
            try:
                return body()
            except BaseException as exc:
                reason = f"{what} failed: {error_text(type(exc).__name__, str(exc)[:500])}"
                logger.error("run %s: %s", run_id, reason)
                self._errors[run_id] = reason
                if placeholder:
                    self._record_not_started(run_id, reason, placeholder)
                raise

        return run

    @staticmethod
    def _record_not_started(run_id: str, reason: str, placeholder: dict) -> None:
        store = RunStore(rayflow_home())
        try:
            row = store.run(run_id)
            if row is not None and row["message"] == STARTING_MESSAGE:  # still the placeholder: it never started
                store.mark_ended(run_id, "FAILED", tasks=[], attempt=1, message=reason, **placeholder)
        except Exception as err:  # noqa: BLE001 - the log line above stays
            logger.warning("run %s: cannot record it FAILED in the history: %s", run_id, err)

    def _flow(self, name: str) -> Any:
        flow = self.flows.get(name)
        if flow is None:
            raise KeyError(f"flow {name!r} is not served here")
        return flow
