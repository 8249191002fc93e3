"""The one configuration schema: every YAML file in `deploy/` is an instance of it.

Unknown keys and wrong types fail at load with a message naming the key and
the file. Each field documents its default and unit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

Device = Literal["cpu", "gpu"]
Placement = Literal["strict_pack", "pack", "spread", "strict_spread"]
Executor = Literal["auto", "uni", "mp", "ray"]
EngineKind = Literal["vllm", "simulated"]


class ConfigError(ValueError):
    """A configuration file that does not fit the schema; the message names key and file."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Parallelism(Strict):
    tensor: PositiveInt = 1
    """Tensor-parallel workers per replica (default 1)."""
    pipeline: PositiveInt = 1
    """Pipeline-parallel stages per replica (default 1)."""
    placement: Placement = "strict_pack"
    """Placement-group strategy for the replica's bundles: strict_pack keeps them on one node."""
    executor: Executor = "auto"
    """vLLM distributed executor. auto: uni for one worker (on CPU too: it runs inside the
    engine-core process), else ray on GPU and mp on CPU (vLLM's CPU platform refuses ray)."""
    cpu_thread_binding: str | None = None
    """CPU only: the cores the engine runs on, as VLLM_CPU_OMP_THREADS_BIND: one core list per
    rank separated by '|' (e.g. "1", or "0|1" for two ranks). The engine-core process is pinned
    to them too, so the front end keeps the other cores."""

    @property
    def world_size(self) -> int:
        return self.tensor * self.pipeline


class Limits(Strict):
    max_output_tokens: PositiveInt = 4096
    """Largest `max_tokens` a request may ask for; larger is refused with 400 (default 4096)."""
    default_output_tokens: PositiveInt | None = None
    """`max_tokens` used when a request sets none (default: max_output_tokens)."""

    @model_validator(mode="after")
    def _default_within_cap(self) -> Limits:
        if self.default_output_tokens and self.default_output_tokens > self.max_output_tokens:
            raise ValueError("default_output_tokens must not exceed max_output_tokens")
        return self

    @property
    def output_tokens_when_unset(self) -> int:
        return self.default_output_tokens or self.max_output_tokens


class Autoscaling(Strict):
    min_replicas: NonNegativeInt = 1
    max_replicas: PositiveInt = 1
    initial_replicas: NonNegativeInt | None = None
    target_ongoing_requests: PositiveFloat = 48
    """Ongoing requests per replica the autoscaler aims for (an engine batches many)."""
    max_ongoing_requests: PositiveInt = 512
    """Requests a replica accepts at once before Serve queues them in the caller."""
    upscale_delay_s: NonNegativeFloat = 15.0
    downscale_delay_s: NonNegativeFloat = 300.0

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self


class SimulatedEngineConfig(Strict):
    """An honest timing-and-capacity model of one GPU replica (engine: simulated)."""

    prefill_tokens_per_s: PositiveFloat = 20000.0
    """Prompt tokens a replica prefills per second."""
    decode_step_base_s: PositiveFloat = 0.012
    """Time of one decode step with a single running sequence, in seconds."""
    decode_step_per_seq_s: NonNegativeFloat = 0.0001
    """Extra decode-step time for each further running sequence, in seconds."""
    max_batch: PositiveInt = 256
    """Sequences decoded together at most; more wait in the engine's queue."""
    kv_tokens: PositiveInt = 262144
    """KV-cache capacity in tokens; a sequence needs prompt + max_tokens of it to start."""
    startup_s: NonNegativeFloat = 0.0
    """Simulated engine start-up time, in seconds."""
    max_model_len: PositiveInt = 131072
    """Context length (prompt + output) in tokens."""
    reserve_workers: bool = False
    """Reserve the bundles a vLLM replica of this model would (one per tensor x pipeline
    worker, {"GPU": 1} on device gpu), so cluster tests place simulated replicas like real
    ones. The simulated engine uses none of them."""


class ReplicaResources(Strict):
    num_cpus: NonNegativeFloat = 1.0
    """CPUs the replica actor itself reserves (its engine workers get one bundle each)."""
    worker_cpus: NonNegativeFloat = 1.0
    """CPUs reserved per tensor/pipeline worker bundle."""


class ModelConfig(Strict):
    name: str = Field(min_length=1)
    """What clients send as `model`."""
    source: str = Field(min_length=1)
    """Hugging Face id or local path of the checkpoint (engine: vllm)."""
    engine: EngineKind = "vllm"
    device: Device = "gpu"
    parallelism: Parallelism = Parallelism()
    limits: Limits = Limits()
    engine_args: dict[str, Any] = {}
    """Passed to vLLM's AsyncEngineArgs unchanged (dtype, max_model_len, ...)."""
    autoscaling: Autoscaling = Autoscaling()
    resources: ReplicaResources = ReplicaResources()
    simulated: SimulatedEngineConfig = SimulatedEngineConfig()
    env: dict[str, str] = {}
    """Environment variables set in the replica before its engine starts."""
    health_check_period_s: PositiveFloat = 10.0
    """Seconds between Serve's checks of the replica's engine; after 3 failures in a row
    Serve replaces the replica (default 10)."""
    health_check_timeout_s: PositiveFloat = 30.0
    """Seconds a health check may take before it counts as failed (default 30)."""
    graceful_shutdown_timeout_s: NonNegativeFloat = 60.0
    """How long a stopping replica lets in-flight streams finish, in seconds (default 60).
    Routers wait http.drain_period_s plus the largest of these, as they relay the streams."""

    @field_validator("engine_args")
    @classmethod
    def _no_owned_engine_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = {"model", "tensor_parallel_size", "pipeline_parallel_size",
                 "distributed_executor_backend", "served_model_name"}
        clash = sorted(owned & value.keys())
        if clash:
            raise ValueError(f"{clash} are set from source/name/parallelism, not engine_args")
        return value


class ApiKey(Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the key; the key itself is never stored."""
    tenant: str = "default"


class AuthConfig(Strict):
    keys: list[ApiKey] = []
    keys_env: str | None = "SERVE_APP_API_KEYS"
    """Environment variable with comma-separated plain keys (tenant "default"), hashed at start."""
    required: bool = False
    """Refuse to start when no key is configured (production configs set this)."""


class ServiceClass(Strict):
    """A priority class: how urgently its requests are served and the TTFT they are promised."""

    ttft_slo_s: PositiveFloat
    """Time to first token promised to admitted requests, in seconds."""
    priority: NonNegativeInt = 0
    """Lower is served first; a waiting request of a lower number always goes ahead."""
    max_queue_wait_s: PositiveFloat | None = None
    """Longest a request may wait for admission, in seconds (default: 80% of ttft_slo_s;
    never more than the SLO less the admission-to-first-bytes time routers measure). One
    that cannot start by then is refused at once."""

    @model_validator(mode="after")
    def _wait_within_slo(self) -> ServiceClass:
        if self.max_queue_wait_s is not None and self.max_queue_wait_s > self.ttft_slo_s:
            raise ValueError("max_queue_wait_s must not exceed ttft_slo_s")
        return self

    @property
    def queue_wait_s(self) -> float:
        return self.max_queue_wait_s if self.max_queue_wait_s is not None else 0.8 * self.ttft_slo_s


class TenantLimits(Strict):
    """Cluster-wide limits of one tenant; unset means unlimited."""

    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    """Prompt + max output tokens charged at admission, corrected by the actual usage."""
    max_concurrent: PositiveInt | None = None
    """Requests admitted or waiting at once."""


class Tenant(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    name: str = Field(min_length=1)
    service_class: str | None = Field(default=None, alias="class")
    """Priority class of the tenant's requests (default: admission.default_class)."""
    weight: PositiveFloat = 1.0
    """Share of contended capacity relative to other tenants (fair queueing weight)."""
    limits: TenantLimits = TenantLimits()


class AdmissionConfig(Strict):
    enabled: bool = True
    """false: every request goes straight to the engine (for comparison runs only)."""
    classes: dict[str, ServiceClass] = {"default": ServiceClass(ttft_slo_s=30.0)}
    default_class: str = "default"
    tenants: list[Tenant] = []
    """Tenants named by auth keys; a tenant not listed gets default_class and no limits."""
    max_in_flight: PositiveInt = 512
    """Requests admitted at once per model, whatever the replicas report."""
    max_queued: NonNegativeInt = 1024
    """Requests waiting for admission per model; more are refused with 503 and Retry-After."""
    queue_timeout_s: PositiveFloat = 30.0
    """Longest any request waits for admission, whatever its class."""
    kv_budget_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    """Share of the replicas' reported KV capacity (tokens) that admitted requests may reserve."""
    engine_queue_fraction: float = Field(default=0.0, ge=0.0, le=4.0)
    """Requests each replica may hold queued beyond its sequence slots, as a share of them
    (rounded up), so a finished sequence's slot refills from the engine's own queue instead of
    after its release reaches the controller. Worth it only where that round trip is long next
    to a request; the engine's own queue orders only coarsely (class, then whether the tenant
    was served more than average), so it blunts the fair queue's finer order."""
    burst_fraction: float = Field(default=0.0, ge=0.0, le=0.5)
    """Share of the replicas' sequence slots (and KV tokens) kept out of the fair shares, for
    the bursts of tenants granted less than their weighted share of all grants lately, while
    others are active too: such a request that finds no room starts at once in this room
    instead of waiting for a flood's lease to end (an engine only queues, it does not preempt
    a running sequence for a slot). A tenant alone never uses it, so a replica's own slots
    must allow for it (with 0.25, max_num_seqs 12 gives the shares 9 slots and bursts 3)."""
    report_stale_after_s: PositiveFloat = 3.0
    """A replica that has not reported its capacity for this long counts as gone (replicas
    report every 0.5 s)."""
    fair_share_window_s: PositiveFloat = 10.0
    """How long a tenant's peak demand keeps room of its fair share reserved for it, in seconds."""
    lease_ttl_s: PositiveFloat = 600.0
    """Admitted capacity returns by itself after this long if nobody releases it."""
    when_unreachable: Literal["local_limit", "admit", "refuse"] = "local_limit"
    """What a router does while the controller cannot be reached: admit up to
    fallback_max_in_flight on its own, admit everything, or refuse with 503."""
    fallback_max_in_flight: PositiveInt = 64
    """Per router: requests it admits on its own while the controller is unreachable."""
    unreachable_retry_s: PositiveFloat = 2.0
    """After a failed call, how long a router decides alone before asking the controller again."""
    refusal_memo_s: NonNegativeFloat = 0.5
    """Longest a router refuses a tenant's requests on its own, after the controller refused
    one of the same class as overloaded and said for how long a like request would be refused
    too; it saves a flooding tenant's refusals the round trip to the controller (0: always ask)."""
    direct_link: bool = True
    """Routers send admits and releases to the controller over one TCP connection each
    instead of one Serve handle call per request (which costs several times the decision)."""
    num_cpus: NonNegativeFloat = 0.1

    @model_validator(mode="after")
    def _consistent(self) -> AdmissionConfig:
        problems = []
        if self.default_class not in self.classes:
            problems.append(f"default_class {self.default_class!r} is not one of classes {sorted(self.classes)}")
        names = [tenant.name for tenant in self.tenants]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            problems.append(f"tenant names must be unique, repeated: {repeated}")
        for tenant in self.tenants:
            if tenant.service_class is not None and tenant.service_class not in self.classes:
                problems.append(f"tenant {tenant.name!r}: class {tenant.service_class!r} is not one of "
                                f"classes {sorted(self.classes)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def tenant(self, name: str) -> Tenant:
        """The tenant's settings; one not listed gets the default class and no limits."""
        found = next((tenant for tenant in self.tenants if tenant.name == name), None)
        return found or Tenant(name=name)

    def class_of(self, tenant: Tenant) -> str:
        return tenant.service_class or self.default_class

    @property
    def longest_wait_s(self) -> float:
        return min(self.queue_timeout_s, max(c.queue_wait_s for c in self.classes.values()))


class RouterConfig(Strict):
    replicas: PositiveInt = 1
    num_cpus: NonNegativeFloat = 0.5
    max_ongoing_requests: PositiveInt = 2048
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    """Larger request bodies are refused with 413."""
    cors_allow_origins: list[str] = []
    """CORS is off unless origins are listed."""
    token_channel: bool = True
    """Streams come back over one TCP connection per replica and router, written once per
    engine step, instead of one Ray message per token."""


class HttpConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    ingress: Literal["haproxy", "proxy"] = "haproxy"
    """haproxy: Ray 2.60's HAProxy ingress sends HTTP straight to the router replicas'
    own servers (RAY_SERVE_ENABLE_HA_PROXY=1 for the whole Ray instance); proxy: Serve's
    Python HTTP proxy, one extra process hop and one Ray message per streamed chunk."""
    haproxy_metrics_port: int = Field(default=9101, ge=0, le=65535)
    haproxy_stats_port: int = Field(default=8404, ge=0, le=65535)
    """haproxy: HAProxy's own metrics and stats listeners. Ray 2.60 binds them on all
    interfaces (it has no host option for them); 0 picks a free port, so several local
    instances can run side by side."""
    fallback_proxy_port: int = Field(default=8500, ge=0, le=65535)
    fallback_proxy_grpc_port: int = Field(default=9500, ge=0, le=65535)
    """haproxy: Serve's Python proxy that HAProxy falls back on while no router replica is
    up (HTTP and gRPC); 0 picks a free port. Two instances must not share it, or one's
    HAProxy falls back on the other's application."""
    replica_ports: Annotated[tuple[int, int], Field(strict=False)] | None = (30000, 31000)
    """haproxy: the port range Ray gives router replicas' own HTTP servers; null picks a
    random free block, so several local Ray instances never hand out the same ports."""
    haproxy_threads: int = Field(default=4, ge=1, le=64)
    """haproxy: HAProxy's worker threads on each node (Ray's default is 4). Threads beyond
    the cores the engines leave free only add cross-thread wake-ups: on 2 cores one thread
    relayed a streamed token with 30% less CPU than four."""
    drain_period_s: NonNegativeFloat = 30.0
    """haproxy: how long a stopping router replica keeps accepting while load balancers
    deregister it; 2 s is plenty on one machine."""


class AppConfig(Strict):
    models: list[ModelConfig] = Field(min_length=1)
    http: HttpConfig = HttpConfig()
    router: RouterConfig = RouterConfig()
    admission: AdmissionConfig = AdmissionConfig()
    auth: AuthConfig = AuthConfig()

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [model.name for model in models]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique, repeated: {duplicates}")
        return models

    @model_validator(mode="after")
    def _keys_name_known_tenants(self) -> AppConfig:
        listed = {tenant.name for tenant in self.admission.tenants}
        unknown = sorted({key.tenant for key in self.auth.keys} - listed - {"default"})
        if listed and unknown:
            raise ValueError(f"auth.keys name tenants not listed in admission.tenants: {unknown}")
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((model for model in self.models if model.name == name), None)


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> AppConfig:
    """Validate already-loaded data; errors name every bad key and the source."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping at the top level")
    try:
        return AppConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def load_config(path: str | os.PathLike[str]) -> AppConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML in {path}: {error}") from None
    return parse_config(data, str(path))
