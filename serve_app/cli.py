"""`serve-app` / `python -m serve_app.cli`: run the stack locally and small helpers.

    python -m serve_app.cli serve --config deploy/local.yaml [--model PATH]
    python -m serve_app.cli hash-key KEY
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

from serve_app.auth import key_hash
from serve_app.config import AppConfig, ConfigError, load_config
from serve_app.ray_env import apply_ray_environment


def override_model(config: AppConfig, source: str, served_name: str | None) -> AppConfig:
    """Serve another checkpoint in place of the config's first model."""
    first = config.models[0]
    name = served_name or Path(source).name
    models = [first.model_copy(update={"source": source, "name": name}), *config.models[1:]]
    return config.model_copy(update={"models": models})


def wait_ready(url: str, timeout_s: float, stop: threading.Event) -> bool:
    """Whether our router answered `url` (its /ready) in time: its own answer, not any 200
    from whatever else might hold the port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200 and json.loads(response.read()).get("status") == "ready":
                    return True
        except (OSError, ValueError, AttributeError):
            pass
        stop.wait(1.0)
    return False


def serve_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.model:
        config = override_model(config, args.model, args.served_name)
    http = config.http.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port)) if v})
    config = config.model_copy(update={"http": http})

    apply_ray_environment(config, os.environ)  # Ray reads these at import: set them first
    import ray
    from ray import serve

    from serve_app.app import APP_NAME, build_application

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    local = args.address == "local"
    ray.init(address=args.address, num_cpus=args.num_cpus if local else None, include_dashboard=False,
             logging_level="WARNING", _node_ip_address="127.0.0.1" if local else None)
    try:
        serve.start(http_options={"host": http.host, "port": http.port})
        serve.run(build_application(config), name=APP_NAME, route_prefix="/", blocking=False)
        base = f"http://{http.host}:{http.port}"
        if wait_ready(base + "/ready", args.ready_timeout, stop):
            print(f"serving {[m.name for m in config.models]} at {base}/v1 (Ctrl-C to stop)", flush=True)
        elif not stop.is_set():
            print(f"not ready after {args.ready_timeout:.0f}s; see the Ray logs", file=sys.stderr)
            return 1
        stop.wait()
        return 0
    finally:
        print("shutting down", flush=True)
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve-app")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve a config on a local Ray instance")
    run.add_argument("--config", default="deploy/local.yaml")
    run.add_argument("--model", help="a local Hugging Face checkpoint to serve instead of the first model")
    run.add_argument("--served-name", help="the model name clients send (default: the checkpoint's folder name)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--address", default="local",
                     help="Ray cluster to join (default: start a new local instance)")
    run.add_argument("--num-cpus", type=int, help="CPUs a new local Ray instance may use (default: all)")
    run.add_argument("--ready-timeout", type=float, default=600.0)
    hasher = commands.add_parser("hash-key", help="print the SHA-256 of an API key for auth.keys")
    hasher.add_argument("key")
    args = parser.parse_args(argv)
    try:
        if args.command == "hash-key":
            print(key_hash(args.key))
            return 0
        return serve_command(args)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
