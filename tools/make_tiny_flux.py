"""Write a tiny, randomly initialised FLUX base model, ControlNet and LoRA to disk in diffusers layout,
tokenizers included, with no hub access. `vidup upscale --engine flux` loads them through the same code as
real FLUX.1-dev weights, so tests and demos exercise the real loading path on CPU in seconds.

    python tools/make_tiny_flux.py OUT_DIR     # writes OUT_DIR/base, controlnet, lora, turbo and schnell (a
                                               # guidance-free base with a fixed shift, as FLUX.1-schnell)

The tiny ControlNet mirrors the real upscaler's layout: double blocks only, fewer of them than the transformer
has, so each ControlNet residual is added after more than one transformer block (the interval is above 1).

`random_components("full", dtype, device)` builds FLUX.1-dev-sized components with random weights, created
directly in `dtype` on `device` (no fp32 staging), for benchmarks on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=2,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=[4, 4, 8],
    guidance_embeds=True,
)
CONTROLNET = dict(TRANSFORMER, num_layers=1, num_single_layers=0)
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16,) * 4,
    layers_per_block=1,
    latent_channels=16,
    norm_num_groups=8,
    shift_factor=0.1159,
    scaling_factor=0.3611,
    sample_size=1024,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
CLIP = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    vocab_size=400,
    projection_dim=32,
    max_position_embeddings=77,
)
T5 = dict(d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4, vocab_size=200)

# FLUX.1-dev and the FLUX ControlNet upscaler (jasperai/Flux.1-dev-Controlnet-Upscaler: 5 double blocks).
FULL = {
    "transformer": dict(
        patch_size=1,
        in_channels=64,
        num_layers=19,
        num_single_layers=38,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=[16, 56, 56],
    ),
    "vae": dict(VAE, block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
    "clip": dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        vocab_size=49408,
        projection_dim=768,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
    ),
    "t5": dict(
        d_model=4096,
        d_ff=10240,
        d_kv=64,
        num_layers=24,
        num_heads=64,
        vocab_size=32128,
        feed_forward_proj="gated-gelu",
        is_gated_act=True,
    ),
}
FULL["controlnet"] = dict(FULL["transformer"], num_layers=5, num_single_layers=0)
TINY = {"transformer": TRANSFORMER, "controlnet": CONTROLNET, "vae": VAE, "clip": CLIP, "t5": T5}
SCHEDULER = dict(
    shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
)
WORDS = [
    "football",
    "broadcast",
    "sharp",
    "detail",
    "players",
    "pitch",
    "grass",
    "crowd",
    "kit",
    "logo",
    "a",
    "of",
    "the",
    "and",
    "photo",
    "high",
    "quality",
    "stadium",
    "ball",
    "jersey",
    "number",
]


def clip_tokenizer():
    from transformers import CLIPTokenizer

    # Byte-level BPE: every printable byte is a token, plus whole words (with the end-of-word marker).
    bytes_vocab = [chr(c) for c in range(33, 127)]
    vocab = {
        tok: i
        for i, tok in enumerate(
            ["<|startoftext|>", "<|endoftext|>"]
            + bytes_vocab
            + [c + "</w>" for c in bytes_vocab]
            + [w + "</w>" for w in WORDS]
        )
    }
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=77,
    )


def t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    pieces += [(chr(c), -5.0) for c in range(97, 123)] + [("\u2581", -2.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


@contextlib.contextmanager
def _creating_in(dtype: torch.dtype, device):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def random_modules(size: str = "tiny", dtype: torch.dtype = torch.float32, device="cpu") -> dict:
    """Randomly initialised FLUX modules of the tiny or the full (FLUX.1-dev) size, created in `dtype` on
    `device`."""
    from diffusers import AutoencoderKL, FluxControlNetModel, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    configs = TINY if size == "tiny" else FULL
    with _creating_in(dtype, device):
        modules = {
            "transformer": FluxTransformer2DModel(**configs["transformer"]),
            "controlnet": FluxControlNetModel(**configs["controlnet"]),
            "vae": AutoencoderKL(**configs["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**configs["clip"])),
            "text_encoder_2": T5EncoderModel(T5Config(**configs["t5"])),
        }
        # Upstream zero-initialises the ControlNet's input and output layers; random ones make it matter.
        torch.nn.init.normal_(modules["controlnet"].controlnet_x_embedder.weight, std=0.02)
        for block in modules["controlnet"].controlnet_blocks:
            torch.nn.init.normal_(block.weight, std=0.02)
    return {name: module.eval() for name, module in modules.items()}


def random_components(size: str = "tiny", dtype: torch.dtype = torch.float32, device="cpu"):
    """`vidup.engines.flux.components.FluxComponents` with random weights and the tiny tokenizers."""
    from vidup.engines.flux.components import FluxComponents

    modules = random_modules(size, dtype, device)
    for module in modules.values():
        module.requires_grad_(False)
    return FluxComponents(
        **modules,
        tokenizer=clip_tokenizer(),
        tokenizer_2=t5_tokenizer(),
        scheduler_config=dict(SCHEDULER, num_train_timesteps=1000),
    )


def build(out: Path, seed: int = 0) -> dict[str, Path]:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    modules = random_modules("tiny")
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        vae=modules["vae"],
        text_encoder=modules["text_encoder"],
        tokenizer=clip_tokenizer(),
        text_encoder_2=modules["text_encoder_2"],
        tokenizer_2=t5_tokenizer(),
        transformer=modules["transformer"],
    )
    paths = {
        "base": out / "base",
        "controlnet": out / "controlnet",
        "lora": out / "lora",
        "turbo": out / "turbo",
        "schnell": out / "schnell",
    }
    pipe.save_pretrained(paths["base"])
    modules["controlnet"].save_pretrained(paths["controlnet"])
    # FLUX.1-schnell's shape: no guidance embedding, a fixed shift (no resolution-dependent one)
    from diffusers import FluxTransformer2DModel

    pipe.register_modules(
        transformer=FluxTransformer2DModel(**dict(TRANSFORMER, guidance_embeds=False)).eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
    )
    pipe.save_pretrained(paths["schnell"])

    for name, path in (("lora", paths["lora"]), ("turbo", paths["turbo"])):
        transformer = random_modules("tiny")["transformer"]  # a fresh copy each: one adapter per model
        transformer.load_state_dict(modules["transformer"].state_dict())
        transformer.add_adapter(
            LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False),
            adapter_name=name,
        )
        FluxPipeline.save_lora_weights(
            path, transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=name)
        )
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, path in build(args.out, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
