"""Systems under test: the commands that start them, all with the same engine settings."""

import sys
from pathlib import Path

import pytest
import yaml

from bench.rayllm_app import BEST_ENV, PLAIN_ENV, llm_config, parse_args
from bench.systems import App, EngineSettings, Model, RayLlm, Vllm, make_system
from serve_app.engines.cpu_dtype import native_cpu_dtype

MODEL = Model("models/tiny-llama", "tiny")


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


class TestCommands:
    def test_raw_vllm_runs_its_openai_server_as_a_module_on_loopback(self, tmp_path):
        command = Vllm("vllm", MODEL).command(8123, tmp_path)
        assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
        assert flag(command, "--model") == "models/tiny-llama"
        assert flag(command, "--served-model-name") == "tiny"
        assert (flag(command, "--host"), flag(command, "--port")) == ("127.0.0.1", "8123")
        assert flag(command, "--max-model-len") == "2048"
        assert flag(command, "--dtype") == native_cpu_dtype()
        assert "--enforce-eager" in command

    def test_engine_settings_render_as_flags_and_kwargs_alike(self):
        engine = EngineSettings(max_model_len=1024, enforce_eager=False, kv_cache_memory_bytes=None)
        assert engine.kwargs() == {"max_model_len": 1024, "enforce_eager": False, "dtype": native_cpu_dtype(),
                                   "max_num_seqs": 128, "disable_log_stats": True}
        assert engine.flags() == ["--max-model-len", "1024", "--dtype", native_cpu_dtype(),
                                  "--max-num-seqs", "128", "--disable-log-stats"]

    def test_the_app_is_served_from_a_config_it_is_given(self, tmp_path):
        command = App("app", MODEL, config=Path("deploy/x.yaml")).command(9000, tmp_path)
        assert command[1:4] == ["-m", "serve_app.cli", "serve"]
        assert (flag(command, "--config"), flag(command, "--port")) == ("deploy/x.yaml", "9000")

    def test_without_a_config_the_app_gets_one_with_the_shared_engine_settings(self, tmp_path):
        command = App("app", MODEL).command(9000, tmp_path)
        config = yaml.safe_load(Path(flag(command, "--config")).read_text())
        model = config["models"][0]
        assert (model["name"], model["source"], model["device"]) == ("tiny", "models/tiny-llama", "cpu")
        assert model["engine_args"] == EngineSettings().kwargs()
        assert (config["http"]["host"], config["http"]["port"]) == ("127.0.0.1", 9000)

    def test_the_written_app_config_fits_the_app_schema(self, tmp_path):
        config_module = pytest.importorskip("serve_app.config")
        path = App("app", MODEL).write_config(tmp_path / "app.yaml", 9000)
        parsed = config_module.load_config(path)
        assert parsed.models[0].name == "tiny"

    def test_ray_serve_llm_runs_the_bench_script_with_best_mode_on_request(self, tmp_path):
        plain = RayLlm("rayllm", MODEL).command(7000, tmp_path)
        best = make_system("rayllm-best", MODEL, EngineSettings()).command(7000, tmp_path)
        assert plain[1:3] == ["-m", "bench.rayllm_app"] and "--best" not in plain
        assert "--best" in best
        args = parse_args(best[3:])
        assert (args.model, args.name, args.port, args.best) == ("models/tiny-llama", "tiny", 7000, True)
        assert args.engine_kwargs == EngineSettings().kwargs()

    def test_unknown_systems_are_refused(self):
        with pytest.raises(ValueError, match="unknown system"):
            make_system("sglang", MODEL, EngineSettings())


class TestRayLlmConfig:
    def test_one_cpu_replica_without_autoscaling(self):
        config = llm_config("models/tiny-llama", "tiny", {"dtype": "bfloat16"}, best=False)
        assert config["model_loading_config"] == {"model_id": "tiny",
                                                  "model_source": "models/tiny-llama"}
        assert config["accelerator_config"] == {"kind": "cpu"}
        assert config["placement_group_config"] == {"bundles": [{"CPU": 1}]}
        autoscaling = config["deployment_config"]["autoscaling_config"]
        assert autoscaling == {"min_replicas": 1, "max_replicas": 1}
        assert "experimental_configs" not in config

    def test_best_mode_streams_unbatched_through_haproxy_and_direct_streaming(self):
        config = llm_config("m", "tiny", {}, best=True)
        assert config["experimental_configs"] == {"stream_batching_interval_ms": 0}
        assert BEST_ENV == {"RAY_SERVE_ENABLE_HA_PROXY": "1",
                            "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1"}

    def test_plain_mode_turns_the_fast_paths_off_whatever_the_environment_says(self):
        assert PLAIN_ENV == {"RAY_SERVE_ENABLE_HA_PROXY": "0",
                             "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "0"}
