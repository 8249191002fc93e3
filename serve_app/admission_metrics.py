"""Admission's Prometheus metrics, through Ray's metrics agent (names get Ray's `ray_` prefix).

    admission_requests{model, tenant, outcome}    counter: admitted, and refused by reason
                                                  (controller and routers)
    admission_queued{model, tenant}               counter: requests that had to wait
    admission_queue_wait_seconds{model, class}    histogram: wait of requests that waited
    admission_in_flight_tokens{model}             gauge: budget tokens held by leases
    admission_capacity_tokens{model}              gauge: the budget they are held against
    admission_in_flight_requests{model}           gauge
    admission_queue_length{model}                 gauge
    admission_replicas{model}                     gauge: replicas reporting capacity
"""

from __future__ import annotations

from collections import Counter as Tally

from ray.util.metrics import Counter, Gauge, Histogram

WAIT_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class DecisionCounter:
    """admission_requests{model, tenant, outcome}. Counted in the process and handed to Ray
    by flush(): one Ray counter update costs more than the decision it counts. The controller
    and the routers (for refusals they answer from memory) count into the same metric."""

    def __init__(self) -> None:
        self._requests = Counter("admission_requests", "Admission decisions, by outcome.",
                                 tag_keys=("model", "tenant", "outcome"))
        self._decisions: Tally[tuple[str, str, str]] = Tally()

    def decided(self, model: str, tenant: str, outcome: str) -> None:
        self._decisions[model, tenant, outcome] += 1

    def flush(self) -> None:
        for (model, tenant, outcome), count in self._decisions.items():
            self._requests.inc(count, tags={"model": model, "tenant": tenant, "outcome": outcome})
        self._decisions.clear()


class AdmissionMetrics:
    def __init__(self) -> None:
        self._decisions = DecisionCounter()
        self._queued = Counter("admission_queued", "Requests that waited for admission.",
                               tag_keys=("model", "tenant"))
        self._wait = Histogram("admission_queue_wait_seconds", "Time waited for admission.",
                               boundaries=WAIT_BOUNDARIES_S, tag_keys=("model", "class"))
        self._gauges = {name: Gauge(f"admission_{name}", description, tag_keys=("model",))
                        for name, description in (
                            ("in_flight_tokens", "Budget tokens held by admitted requests."),
                            ("capacity_tokens", "Budget tokens the replicas offer."),
                            ("in_flight_requests", "Admitted requests not yet released."),
                            ("queue_length", "Requests waiting for admission."),
                            ("replicas", "Replicas reporting capacity."))}

    def decided(self, model: str, tenant: str, outcome: str) -> None:
        self._decisions.decided(model, tenant, outcome)

    def flush(self) -> None:
        self._decisions.flush()

    def queued(self, model: str, tenant: str) -> None:
        self._queued.inc(1, tags={"model": model, "tenant": tenant})

    def waited(self, model: str, service_class: str, seconds: float) -> None:
        self._wait.observe(seconds, tags={"model": model, "class": service_class})

    def level(self, model: str, **values: float) -> None:
        for name, value in values.items():
            self._gauges[name].set(value, tags={"model": model})
