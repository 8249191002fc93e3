"""The application builder: one Serve application from one AppConfig.

Usable from `serve run` / `serve deploy` (`import_path: serve_app.app:build_app`,
`args: {config: deploy/local.yaml}` or `args: {config_inline: {...}}`) and from
Python (`build_application(config)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from serve_app.admission import CONTROLLER_DEPLOYMENT, AdmissionController
from serve_app.config import AppConfig, ConfigError, load_config, parse_config
from serve_app.router import Router
from serve_app.server import llm_server_deployment

APP_NAME = "llm"

# Serve logs every request and every handle call by default; at thousands of calls
# per second that is a large share of the router's and controller's CPU. Errors
# and refusals are still logged by our code, with their request id.
QUIET = {"enable_access_log": False}


def with_local_sources(config: AppConfig) -> AppConfig:
    """Make model sources that are local paths absolute, so replicas find them from any cwd."""
    models = [
        model.model_copy(update={"source": str(Path(model.source).resolve())})
        if Path(model.source).exists() else model
        for model in config.models
    ]
    return config.model_copy(update={"models": models})


def config_from_args(args: dict[str, Any]) -> AppConfig:
    if "config_inline" in args:
        return parse_config(args["config_inline"], "args.config_inline")
    if "config" in args:
        return load_config(args["config"])
    raise ConfigError("build_app needs args 'config' (a YAML path) or 'config_inline' (a mapping)")


def router_shutdown_timeout_s(config: AppConfig) -> float:
    """A stopping router relays its streams to their end: after the load balancers' drain
    period, as long as the most patient model's replicas let theirs run."""
    return config.http.drain_period_s + max(model.graceful_shutdown_timeout_s for model in config.models)


def build_application(config: AppConfig) -> Application:
    config = with_local_sources(config)
    servers = {model.name: llm_server_deployment(model).options(logging_config=QUIET).bind(model)
               for model in config.models}
    admission = serve.deployment(AdmissionController).options(
        name=CONTROLLER_DEPLOYMENT,
        num_replicas=1,
        max_ongoing_requests=1_000_000,  # admit() waits here on purpose; never back-pressure it
        ray_actor_options={"num_cpus": config.admission.num_cpus},
        logging_config=QUIET,
    ).bind(config.admission)
    router = serve.deployment(serve.ingress()(Router)).options(
        name="Router",
        num_replicas=config.router.replicas,
        max_ongoing_requests=config.router.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.router.num_cpus},
        graceful_shutdown_timeout_s=router_shutdown_timeout_s(config),
        logging_config=QUIET,
    )
    return router.bind(config, servers, admission)


def build_app(args: dict[str, Any]) -> Application:
    """Entry point for `serve run serve_app.app:build_app config=...`."""
    return build_application(config_from_args(args))
