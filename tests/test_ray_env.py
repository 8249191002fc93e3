from serve_app.config import parse_config
from serve_app.ray_env import ray_environment

MODEL = {"name": "m", "source": "/models/m"}


def test_haproxy_ingress_turns_on_rays_haproxy_and_the_throughput_mode():
    env = ray_environment(parse_config({"models": [MODEL]}))
    assert env == {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def test_the_python_proxy_ingress_leaves_haproxy_off():
    env = ray_environment(parse_config({"models": [MODEL], "http": {"ingress": "proxy"}}))
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in env
