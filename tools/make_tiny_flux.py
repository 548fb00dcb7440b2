"""Write a tiny, randomly initialised FLUX base model, ControlNet and LoRA to disk in diffusers layout,
tokenizers included, with no hub access. `vidup upscale --engine flux` loads them through the same code as
real FLUX.1-dev weights, so tests and demos exercise the real loading path on CPU in seconds.

    python tools/make_tiny_flux.py OUT_DIR     # writes OUT_DIR/base, OUT_DIR/controlnet, OUT_DIR/lora
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                   num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                   guidance_embeds=True)
WORDS = ["football", "broadcast", "sharp", "detail", "players", "pitch", "grass", "crowd", "kit", "logo", "a", "of",
         "the", "and", "photo", "high", "quality", "stadium", "ball", "jersey", "number"]


def clip_tokenizer():
    from transformers import CLIPTokenizer

    # Byte-level BPE: every printable byte is a token, plus whole words (with the end-of-word marker).
    bytes_vocab = [chr(c) for c in range(33, 127)]
    vocab = {tok: i for i, tok in enumerate(["<|startoftext|>", "<|endoftext|>"] + bytes_vocab
                                             + [c + "</w>" for c in bytes_vocab] + [w + "</w>" for w in WORDS])}
    return CLIPTokenizer(vocab=vocab, merges=[], bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                         pad_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=77)


def t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    pieces += [(chr(c), -5.0) for c in range(97, 123)] + [("\u2581", -2.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build(out: Path, seed: int = 0) -> dict[str, Path]:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxControlNetModel, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**TRANSFORMER)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16,) * 4, layers_per_block=1,
                        latent_channels=16, norm_num_groups=8, shift_factor=0.1159, scaling_factor=0.3611,
                        use_quant_conv=False, use_post_quant_conv=False)
    clip = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                        vocab_size=400, projection_dim=32, max_position_embeddings=77))
    t5 = T5EncoderModel(T5Config(d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4, vocab_size=200))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tokenizer(),
                        text_encoder_2=t5, tokenizer_2=t5_tokenizer(), transformer=transformer)
    paths = {"base": out / "base", "controlnet": out / "controlnet", "lora": out / "lora"}
    pipe.save_pretrained(paths["base"])

    controlnet = FluxControlNetModel(**TRANSFORMER)
    torch.nn.init.normal_(controlnet.controlnet_x_embedder.weight, std=0.02)  # zero-init upstream: make it matter
    for block in controlnet.controlnet_blocks:
        torch.nn.init.normal_(block.weight, std=0.02)
    controlnet.save_pretrained(paths["controlnet"])

    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                       init_lora_weights=False))
    FluxPipeline.save_lora_weights(paths["lora"], transformer_lora_layers=get_peft_model_state_dict(transformer))
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
