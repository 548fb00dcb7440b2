"""The FLUX components the engine declares, loaded once, each in its own dtype; the prompt encoder; LoRAs.

diffusers provides the models (transformer, ControlNet, VAE), transformers the text encoders and tokenizers, and
the scheduler config carries the shift settings. Nothing here builds a pipeline object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vidup.errors import ModelFormatError

log = logging.getLogger(__name__)

MODULES = ("transformer", "controlnet", "vae", "text_encoder", "text_encoder_2")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
DENOISING_SET = ("transformer", "controlnet", "vae")


def component_dtypes(dtype: torch.dtype, device: torch.device) -> dict[str, torch.dtype]:
    """Every component in the placement dtype, except T5, which overflows in fp16: it takes bf16 where the device
    has it, else fp32."""
    dtypes = dict.fromkeys(MODULES, dtype)
    if dtype == torch.float16:
        bf16 = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
        dtypes["text_encoder_2"] = torch.bfloat16 if bf16 else torch.float32
    return dtypes


def weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


@dataclass
class FluxComponents:
    transformer: nn.Module
    controlnet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module  # CLIP-L: pooled embedding
    text_encoder_2: nn.Module  # T5-XXL: token embeddings
    tokenizer: object
    tokenizer_2: object
    scheduler_config: dict

    @classmethod
    def load(cls, base_dir: Path, controlnet_dir: Path, dtypes: dict[str, torch.dtype]) -> "FluxComponents":
        from diffusers import (
            AutoencoderKL,
            FlowMatchEulerDiscreteScheduler,
            FluxControlNetModel,
            FluxTransformer2DModel,
        )
        from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

        def load(loader, folder, subfolder=None, dtype=None):
            kwargs = {"local_files_only": True}
            if subfolder:
                kwargs["subfolder"] = subfolder
            if dtype is not None:
                kwargs["torch_dtype"] = dtype
            try:
                return loader.from_pretrained(str(folder), **kwargs)
            except (OSError, ValueError, KeyError) as exc:
                where = Path(folder) / (subfolder or "")
                raise ModelFormatError(
                    f"{where}: cannot be loaded as {getattr(loader, '__name__', loader)}: {exc}"
                ) from None

        components = cls(
            transformer=load(FluxTransformer2DModel, base_dir, "transformer", dtypes["transformer"]),
            controlnet=load(FluxControlNetModel, controlnet_dir, None, dtypes["controlnet"]),
            vae=load(AutoencoderKL, base_dir, "vae", dtypes["vae"]),
            text_encoder=load(CLIPTextModel, base_dir, "text_encoder", dtypes["text_encoder"]),
            text_encoder_2=load(T5EncoderModel, base_dir, "text_encoder_2", dtypes["text_encoder_2"]),
            tokenizer=load(AutoTokenizer, base_dir, "tokenizer"),
            tokenizer_2=load(AutoTokenizer, base_dir, "tokenizer_2"),
            scheduler_config=dict(load(FlowMatchEulerDiscreteScheduler, base_dir, "scheduler").config),
        )
        components.check(base_dir, controlnet_dir)
        return components

    def check(self, base_dir: Path, controlnet_dir: Path) -> None:
        for name in ("tokenizer", "tokenizer_2"):
            if len(getattr(self, name)) < 3:  # offline from_pretrained can return an empty tokenizer, not an error
                raise ModelFormatError(f"{base_dir / name}: the tokenizer loaded empty; the folder is incomplete")
        for module in (self.transformer, self.controlnet):
            module.eval()
        if getattr(self.controlnet, "input_hint_block", None) is not None or getattr(self.controlnet, "union", False):
            raise ModelFormatError(
                f"{controlnet_dir}: an XLabs or Union ControlNet; vidup runs InstantX-style "
                "ControlNets such as the FLUX ControlNet upscaler"
            )
        if self.controlnet.config.in_channels != self.transformer.config.in_channels:
            raise ModelFormatError(f"{controlnet_dir}: this ControlNet does not fit the FLUX model in {base_dir}")
        for module in (self.vae, self.text_encoder, self.text_encoder_2):
            module.eval().requires_grad_(False)
        self.transformer.requires_grad_(False)
        self.controlnet.requires_grad_(False)

    def modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in MODULES}

    def dtypes(self) -> dict[str, torch.dtype]:
        return {name: next(module.parameters()).dtype for name, module in self.modules().items()}

    def sizes(self) -> dict[str, int]:
        return {name: weight_bytes(module) for name, module in self.modules().items()}

    @property
    def guidance_embeds(self) -> bool:
        return bool(self.transformer.config.guidance_embeds)


@dataclass
class PromptEmbeddings:
    tokens: torch.Tensor  # T5 hidden states (1, max_sequence_length, 4096)
    pooled: torch.Tensor  # CLIP pooled (1, 768)


def _tokenize(tokenizer, prompt: str, max_length: int, what: str) -> torch.Tensor:
    ids = tokenizer(prompt, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids
    untruncated = tokenizer(prompt, padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] > ids.shape[-1]:
        log.warning("the prompt is longer than %s's %d tokens; the rest is ignored", what, max_length)
    return ids


@torch.inference_mode()
def encode_prompt(components: FluxComponents, prompt: str, max_sequence_length: int) -> PromptEmbeddings:
    """CLIP's pooled embedding and T5's token embeddings, as FluxPipeline.encode_prompt computes them."""
    clip, t5 = components.text_encoder, components.text_encoder_2
    clip_device, t5_device = next(clip.parameters()).device, next(t5.parameters()).device
    max_clip = getattr(components.tokenizer, "model_max_length", 77) or 77
    clip_ids = _tokenize(components.tokenizer, prompt, max_clip, "CLIP")
    pooled = clip(clip_ids.to(clip_device), output_hidden_states=False).pooler_output.to(clip.dtype)
    t5_ids = _tokenize(components.tokenizer_2, prompt, max_sequence_length, "T5")
    tokens = t5(t5_ids.to(t5_device), output_hidden_states=False)[0].to(t5.dtype)
    return PromptEmbeddings(tokens=tokens, pooled=pooled)


def load_lora(transformer: nn.Module, path: Path, adapter_name: str) -> None:
    """A FLUX LoRA (diffusers/peft, KohyaSS or XLabs layout; diffusers converts) into the transformer."""
    from diffusers import FluxPipeline

    try:
        # The metadata (diffusers' saved LoraConfig: rank, alpha) sets the scale alpha / rank; without it a LoRA whose
        # alpha differs from its rank would load at rank / alpha times its trained strength.
        state_dict, alphas, metadata = FluxPipeline.lora_state_dict(
            str(path), return_alphas=True, return_lora_metadata=True
        )
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise ModelFormatError(f"{path}: not a FLUX LoRA ({exc})") from None
    text_keys = [k for k in state_dict if k.startswith(("text_encoder.", "text_encoder_2."))]
    if text_keys:
        log.warning(
            "%s: its %d text-encoder LoRA weights are not used (vidup applies LoRAs to the transformer)",
            path,
            len(text_keys),
        )
    state_dict = {k: v for k, v in state_dict.items() if k not in text_keys}
    if not any("lora" in k for k in state_dict):
        raise ModelFormatError(f"{path}: holds no FLUX transformer LoRA weights")
    try:
        FluxPipeline.load_lora_into_transformer(
            state_dict, network_alphas=alphas, transformer=transformer, adapter_name=adapter_name, metadata=metadata
        )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelFormatError(f"{path}: does not fit this FLUX transformer ({exc})") from None
