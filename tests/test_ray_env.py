from serve_app.config import parse_config
from serve_app.ray_env import apply_ray_environment, free_port, random_port_block, ray_environment

MODEL = {"name": "m", "source": "/models/m"}


def test_haproxy_ingress_turns_on_rays_haproxy_and_the_throughput_mode():
    env = ray_environment(parse_config({"models": [MODEL]}))
    assert env == {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                   "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
                   "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "30", "RAY_SERVE_HAPROXY_RETRIES": "8",
                   "RAY_SERVE_HAPROXY_NBTHREAD": "4",
                   "RAY_SERVE_HAPROXY_METRICS_PORT": "9101", "RAY_SERVE_HAPROXY_STATS_PORT": "8404",
                   "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": "8500", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": "9500",
                   "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "30000",
                   "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "31000"}


def test_port_zero_picks_a_free_port_for_each_local_instance():
    config = parse_config({"models": [MODEL], "http": {
        "haproxy_metrics_port": 0, "haproxy_stats_port": 0, "fallback_proxy_port": 0,
        "fallback_proxy_grpc_port": 0, "replica_ports": None}})
    env = ray_environment(config)
    for name in ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT",
                 "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"):
        assert int(env[name]) > 0
    low, high = int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]), int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
    assert 32768 <= low < high < 60000 and high - low == 63


def test_a_free_port_is_one_neither_the_kernel_nor_ray_hands_out_later():
    low, high = (int(bound) for bound in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    for _ in range(50):
        port = free_port()
        assert 20000 <= port < 30000 and not low <= port <= high


def test_a_replica_port_block_never_holds_a_port_ray_binds_by_number():
    for _ in range(2000):
        low, high = random_port_block()
        assert not any(low <= port <= high for port in (44217, 44227, 52365))


def test_the_configs_instance_ports_override_inherited_ones_but_other_settings_do_not():
    environ = {"RAY_SERVE_HAPROXY_STATS_PORT": "1111", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    apply_ray_environment(parse_config({"models": [MODEL]}), environ)
    assert environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "8404"
    assert environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"


def test_the_python_proxy_ingress_leaves_haproxy_off():
    env = ray_environment(parse_config({"models": [MODEL], "http": {"ingress": "proxy"}}))
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in env


def test_haproxy_runs_the_configured_number_of_threads():
    env = ray_environment(parse_config({"models": [MODEL], "http": {"haproxy_threads": 1}}))
    assert env["RAY_SERVE_HAPROXY_NBTHREAD"] == "1"
