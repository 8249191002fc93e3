"""Serve one model with Ray Serve LLM's OpenAI app on 127.0.0.1:<port> until signalled.

    python -m bench.rayllm_app --model models/tiny-llama --name tiny --port 8000 [--best]

--best turns on Ray Serve's HAProxy ingress, direct streaming from the LLM
server, and unbatched streaming (stream_batching_interval_ms 0).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from typing import Any

from serve_app.engines.cpu_dtype import native_cpu_dtype
from serve_app.ray_env import free_port

BEST_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1"}
# Without --best the flags are off whatever the caller's environment says.
PLAIN_ENV = {name: "0" for name in BEST_ENV}
DEFAULT_ENGINE_KWARGS = {"max_model_len": 2048, "enforce_eager": True, "dtype": native_cpu_dtype(),
                         "kv_cache_memory_bytes": 1 << 30}


def llm_config(model: str, name: str, engine_kwargs: dict[str, Any], best: bool) -> dict[str, Any]:
    """The LLMConfig fields: one CPU replica, no autoscaling."""
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": name, "model_source": model},
        "accelerator_config": {"kind": "cpu"},
        "placement_group_config": {"bundles": [{"CPU": 1}]},
        "engine_kwargs": engine_kwargs,
        "deployment_config": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
    }
    if best:
        config["experimental_configs"] = {"stream_batching_interval_ms": 0}
    if engine_kwargs.get("disable_log_stats"):
        config["log_engine_metrics"] = False  # Ray Serve LLM refuses engine metrics without stats
    return config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint path or Hugging Face id")
    parser.add_argument("--name", required=True, help="model id clients send")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--engine-kwargs", type=json.loads, default=DEFAULT_ENGINE_KWARGS,
                        help="vLLM engine kwargs as JSON")
    parser.add_argument("--num-cpus", type=float, default=max(os.cpu_count() or 1, 4),
                        help="logical CPUs of the local Ray node (default: the machine's, at least 4)")
    parser.add_argument("--best", action="store_true")
    return parser.parse_args(argv)


INSTANCE_PORTS = ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT",
                  "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")


def wait_for_signal() -> None:
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Ray Serve reads these flags when it is imported, here and in every Ray worker.
    os.environ.update(BEST_ENV if args.best else PLAIN_ENV)
    if args.best:  # HAProxy's own listeners default to fixed ports; another local instance may hold them
        os.environ.update({name: str(free_port()) for name in INSTANCE_PORTS})
    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    # Logical CPUs only gate scheduling: the ingress (1) and the LLM server's bundle
    # (replica + engine, 2) must fit even on a two-core machine.
    ray.init(address="local", num_cpus=args.num_cpus)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    config = LLMConfig(**llm_config(args.model, args.name, args.engine_kwargs, args.best))
    serve.run(build_openai_app({"llm_configs": [config]}), blocking=False)
    print(f"serving {args.name} on http://127.0.0.1:{args.port}", flush=True)
    wait_for_signal()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
