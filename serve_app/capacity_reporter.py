"""A replica's side of capacity discovery: push its EngineStats to the AdmissionController.

Pushed rather than polled so the controller hears from every replica, not from
whichever one a handle routes to; a replica that stops pushing (dead, stuck) drops
out of the budget by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ray import serve
from ray.serve.exceptions import RayServeException

from serve_app.capacity import REPORT_INTERVAL_S
from serve_app.protocol import EngineStats

logger = logging.getLogger("ray.serve")

CONTROLLER_DEPLOYMENT = "AdmissionController"
"""The controller's deployment name in the app (serve_app.app names it so)."""
REPORT_TIMEOUT_S = 2.0


class CapacityReporter:
    def __init__(self, model: str, stats: Callable[[], EngineStats]) -> None:
        self._model = model
        self._stats = stats
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reporting, if this runs inside a Serve replica (not in unit tests)."""
        try:
            context = serve.get_replica_context()
        except RayServeException:
            return
        controller = serve.get_deployment_handle(CONTROLLER_DEPLOYMENT, app_name=context.app_name)
        self._task = asyncio.get_running_loop().create_task(
            self._report_forever(controller, context.replica_id.unique_id))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _report_forever(self, controller, replica_id: str) -> None:
        failures = 0
        while True:
            try:
                report = controller.report.remote(self._model, replica_id, self._stats())
                await asyncio.wait_for(report, REPORT_TIMEOUT_S)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the controller restarts; keep trying
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.warning("cannot report capacity to admission (%d tries): %r", failures, error)
            await asyncio.sleep(REPORT_INTERVAL_S)
