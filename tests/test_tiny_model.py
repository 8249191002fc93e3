"""The generated tiny Llama, specified: real shapes, a real tokenizer and template, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve_app.tiny_model import (
    HIDDEN_SIZE,
    NUM_HEADS,
    NUM_KV_HEADS,
    NUM_LAYERS,
    SPECIAL_TOKENS,
    is_complete,
    write_tiny_model,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="module")
def config(checkpoint) -> dict:
    return json.loads((checkpoint / "config.json").read_text())


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    with pytest.MonkeyPatch.context() as patch:  # offline: everything comes from the checkpoint
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(checkpoint), use_fast=True, local_files_only=True)


def test_config_describes_a_llama_with_grouped_query_attention(config):
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == HIDDEN_SIZE
    assert config["num_attention_heads"] == NUM_HEADS
    assert config["head_dim"] == config["hidden_size"] // config["num_attention_heads"] == 64
    assert config["num_key_value_heads"] == 2
    assert config["num_hidden_layers"] == NUM_LAYERS


def test_vocab_covers_the_tokenizer_and_its_special_tokens(config, tokenizer):
    assert len(tokenizer) <= config["vocab_size"]
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert all(0 <= token_id < config["vocab_size"] for token_id in ids)
    assert config["bos_token_id"] == tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in config["eos_token_id"]


def test_generation_config_matches_model_config(checkpoint, config):
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    assert generation == {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}


def test_tokenizer_loads_offline_as_a_fast_tokenizer(tokenizer):
    assert tokenizer.is_fast
    assert tokenizer.bos_token == "<|begin_of_text|>"
    assert tokenizer.eos_token == "<|eot_id|>"


@pytest.mark.parametrize("token", SPECIAL_TOKENS)
def test_special_tokens_encode_to_a_single_id(tokenizer, token):
    ids = tokenizer.encode(token, add_special_tokens=False)
    assert ids == [tokenizer.convert_tokens_to_ids(token)]
    assert tokenizer.decode(ids) == token


def test_plain_text_round_trips(tokenizer):
    text = "Hello world, please write a short poem about Ray Serve."
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_renders_llama_3_1_headers(tokenizer):
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "hello there"},
         {"role": "assistant", "content": "hi"},
         {"role": "user", "content": [{"type": "text", "text": "  again  "}]}],
        tokenize=False, add_generation_prompt=True,
    )
    assert rendered.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "Be brief.<|eot_id|>" in rendered
    assert "<|start_header_id|>user<|end_header_id|>\n\nhello there<|eot_id|>" in rendered
    assert "<|start_header_id|>assistant<|end_header_id|>\n\nhi<|eot_id|>" in rendered
    assert "<|start_header_id|>user<|end_header_id|>\n\nagain<|eot_id|>" in rendered
    assert rendered.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert rendered.count("<|begin_of_text|>") == 1


def test_chat_template_without_generation_prompt_ends_after_last_message(tokenizer):
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                             tokenize=False, add_generation_prompt=False)
    assert rendered.endswith("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>")


def test_weights_have_llama_tensor_names_and_shapes(checkpoint, config):
    from safetensors import safe_open

    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv_dim = config["num_key_value_heads"] * config["head_dim"]
    expected = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
                "lm_head.weight": (vocab, hidden)}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        expected |= {
            prefix + "self_attn.q_proj.weight": (hidden, hidden),
            prefix + "self_attn.k_proj.weight": (kv_dim, hidden),
            prefix + "self_attn.v_proj.weight": (kv_dim, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, hidden),
            prefix + "mlp.gate_proj.weight": (inter, hidden),
            prefix + "mlp.up_proj.weight": (inter, hidden),
            prefix + "mlp.down_proj.weight": (hidden, inter),
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "post_attention_layernorm.weight": (hidden,),
        }
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as weights:
        shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    assert shapes == expected
    assert dtypes == {"BF16"}


def test_is_complete_only_after_writing(tmp_path, checkpoint):
    assert not is_complete(tmp_path / "empty")
    assert is_complete(checkpoint)


def test_is_complete_is_false_when_a_file_is_missing(tmp_path):
    out = write_tiny_model(tmp_path / "partial")
    (out / "model.safetensors").unlink()
    assert not is_complete(out)


def test_writing_twice_gives_identical_weights_and_tokenizer(tmp_path, checkpoint):
    from safetensors.torch import load_file

    again = write_tiny_model(tmp_path / "again")
    first, second = load_file(str(checkpoint / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all(first[name].equal(second[name]) for name in first)
    assert (checkpoint / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()
    assert (checkpoint / "config.json").read_text() == (again / "config.json").read_text()
