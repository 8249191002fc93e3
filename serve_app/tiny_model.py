"""Write a small random-weight Llama checkpoint in Hugging Face format.

The checkpoint loads through vLLM's normal path, exactly like a real Llama 3.1
checkpoint: `config.json`, `model.safetensors`, a byte-level BPE tokenizer
(trained here, offline, with `tokenizers`) carrying the Llama 3.1 special tokens
and chat template. Its answers are noise; its shapes, tokenizer and template are
real, which is what the serving stack needs to be exercised end to end.

    python -m serve_app.tiny_model models/tiny-llama
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

VOCAB_SIZE = 1024
HIDDEN_SIZE = 256
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2  # divides by 2 so the model also runs at tensor parallel 2
MAX_POSITIONS = 4096
SEED = 1234

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<|finetune_right_pad_id|>",
]

# Llama 3.1's chat template without the tool-calling branches: a system header
# with the knowledge cut-off, then one header block per message.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] | trim }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'text' %}{{- part['text'] | trim }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

# The tokenizer's training vocabulary; bench/ builds prompts from it so their token
# counts on the tiny model are predictable.
WORDS = (
    "the a model serves tokens request cluster replica engine stream answer "
    "question user assistant system fast slow queue admit refuse tenant quota "
    "priority capacity memory cache prefix batch decode prefill latency time "
    "first token hello world please write short poem about ray serve vllm gpu "
    "node placement group tensor parallel pipeline scale up down health ready "
    "error retry after limit minute second number one two three four five "
).split()


def _training_corpus(lines: int = 4000) -> list[str]:
    rng = random.Random(SEED)
    corpus = []
    for _ in range(lines):
        words = rng.choices(WORDS, k=rng.randint(4, 24))
        sentence = " ".join(words).capitalize()
        corpus.append(sentence + rng.choice([".", "?", "!", ", 42.", ": 3.14"]))
    return corpus


def _write_tokenizer(out: Path) -> dict[str, int]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.save(str(out / "tokenizer.json"))
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "pad_token": "<|finetune_right_pad_id|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    special_map = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))
    return ids


def _model_config(special_ids: dict[str, int], vocab_size: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": HIDDEN_SIZE * 2,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HIDDEN_SIZE // NUM_HEADS,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": special_ids["<|begin_of_text|>"],
        "eos_token_id": [special_ids["<|eot_id|>"], special_ids["<|end_of_text|>"]],
    }


def _write_weights(out: Path, config: dict) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(SEED)

    def randn(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * 0.02).to(torch.bfloat16)

    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv_dim = config["num_key_value_heads"] * config["head_dim"]
    tensors = {"model.embed_tokens.weight": randn(vocab, hidden)}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        tensors |= {
            prefix + "self_attn.q_proj.weight": randn(hidden, hidden),
            prefix + "self_attn.k_proj.weight": randn(kv_dim, hidden),
            prefix + "self_attn.v_proj.weight": randn(kv_dim, hidden),
            prefix + "self_attn.o_proj.weight": randn(hidden, hidden),
            prefix + "mlp.gate_proj.weight": randn(inter, hidden),
            prefix + "mlp.up_proj.weight": randn(inter, hidden),
            prefix + "mlp.down_proj.weight": randn(hidden, inter),
            prefix + "input_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            prefix + "post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
        }
    tensors["model.norm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    tensors["lm_head.weight"] = randn(vocab, hidden)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def write_tiny_model(out: Path) -> Path:
    """Write the checkpoint into `out` (created if missing) and return it."""
    out.mkdir(parents=True, exist_ok=True)
    special_ids = _write_tokenizer(out)
    vocab_size = max(special_ids.values()) + 1
    config = _model_config(special_ids, vocab_size)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    _write_weights(out, config)
    return out


def is_complete(path: Path) -> bool:
    needed = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return all((path / name).exists() for name in needed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("models/tiny-llama"))
    parser.add_argument("--force", action="store_true", help="rewrite an existing checkpoint")
    args = parser.parse_args()
    if is_complete(args.out) and not args.force:
        print(f"tiny model already at {args.out}")
        return
    write_tiny_model(args.out)
    print(f"wrote tiny model to {args.out}")


if __name__ == "__main__":
    main()
