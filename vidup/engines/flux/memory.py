"""Where each FLUX component lives, decided once from the device's free memory, and carried out explicitly.

    none        every component is moved to the device once; the text encoders leave after the clip's prompt
    model       components come to the device by phase: the text encoders for the prompt (then leave), then the
                denoising set (transformer, ControlNet, VAE), which stays for the whole clip
    sequential  the transformer and the ControlNet stream in block by block on every step; the VAE stays

In none and model no module moves while frames are processed: each is uploaded at most once per clip.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from torch import nn

from vidup.engines.flux.components import DENOISING_SET, TEXT_ENCODERS

log = logging.getLogger(__name__)
GIB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    offload: str  # none | model | sequential
    reason: str


def working_bytes(width: int, height: int, gib_per_mpix: float) -> int:
    """Planning margin for activations (and the VAE) at an output size."""
    return int(width * height / 1e6 * gib_per_mpix * GIB)


def choose_memory_plan(
    requested: str,
    device: torch.device,
    sizes: dict[str, int],
    working: int,
    free: int | None,
    reserve: int,
    *,
    resident: Collection[str] = (),
    allow_sequential: bool = True,
) -> MemoryPlan:
    """`sizes`: bytes of each component's weights; `working`: bytes of activations at the output size; `free`:
    bytes free on the device now (None on CPU). `resident`: components already on the device; `free` excludes
    their bytes, so they count as present, not as needed again. `allow_sequential=False` (validation while a
    LoRA trains): never stream blocks, even when asked to or when nothing else fits, since group offloading
    swaps the trained parameters' data to host copies while their gradients and optimizer state stay on the
    device."""
    if device.type == "cpu":
        return MemoryPlan("none", "CPU: every component stays in RAM")
    if requested != "auto" and (allow_sequential or requested != "sequential"):
        return MemoryPlan(requested, f"offload '{requested}' was requested")
    asked = "offload 'sequential' is ruled out here; " if requested == "sequential" else ""
    gib = lambda b: f"{b / GIB:.1f} GiB"  # noqa: E731
    present = sum(sizes[n] for n in resident)
    budget = (free or 0) - reserve + present  # the room as if nothing were on the device yet
    room = gib(budget) + (f" (counting {', '.join(sorted(resident))} already on the device)" if resident else "")
    text = sum(sizes[n] for n in TEXT_ENCODERS)
    denoise = sum(sizes[n] for n in DENOISING_SET)
    # In `model` only the text encoders move for the prompt: resident denoising modules stay beside them.
    prompt_phase = text + sum(sizes[n] for n in resident if n in DENOISING_SET)
    if text + denoise + working <= budget:
        return MemoryPlan(
            "none", f"{asked}all weights ({gib(text + denoise)}) and activations ({gib(working)}) fit in {room}"
        )
    if max(prompt_phase, denoise + working) <= budget:
        return MemoryPlan(
            "model",
            f"{asked}the denoising set ({gib(denoise)}) and activations ({gib(working)}) fit "
            f"in {room}, not with the text encoders ({gib(text)})",
        )
    if allow_sequential:
        return MemoryPlan(
            "sequential",
            f"the denoising set ({gib(denoise)}) and activations ({gib(working)}) do "
            f"not fit in {room}: blocks stream in per step",
        )
    plan = MemoryPlan(
        "model",
        f"{asked}the denoising set ({gib(denoise)}) and activations ({gib(working)}), or the "
        f"text encoders ({gib(text)}) beside the resident modules, do not fit in {room}, and "
        f"sequential offload is ruled out: this may run out of memory",
    )
    log.warning("FLUX memory plan: %s", plan.reason)
    return plan


def on_device(modules: dict[str, nn.Module], device: torch.device) -> set[str]:
    """The names of the modules whose weights are on `device` already (the `resident` of `choose_memory_plan`)."""

    def there(module: nn.Module) -> bool:
        p = next(module.parameters(), None)
        return p is not None and p.device.type == device.type and device.index in (None, p.device.index)

    return {name for name, module in modules.items() if there(module)}


def free_device_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return None


@dataclass
class Placer:
    """Carries out a plan. `moves` logs every (component, "device"|"host") transfer, so the plan can be checked
    on any machine."""

    modules: dict[str, nn.Module]
    plan: MemoryPlan
    device: torch.device
    host: torch.device = torch.device("cpu")
    moves: list[tuple[str, str]] = field(default_factory=list)
    location: dict[str, str] = field(default_factory=dict)
    streamed: bool = False

    def __post_init__(self):
        self.location = dict.fromkeys(self.modules, "host")
        if self.plan.offload == "none":
            self._move(list(self.modules), "device")

    def _move(self, names, where: str) -> None:
        for name in names:
            if self.location[name] == where:
                continue
            self.modules[name].to(self.device if where == "device" else self.host)
            self.location[name] = where
            self.moves.append((name, where))
        if where == "host" and self.device.type == "cuda":
            torch.cuda.empty_cache()

    def release(self, names) -> None:
        """Send components to the host until the next `denoise_phase` (LoRA training between validations)."""
        self._move(list(names), "host")

    def replan(self, plan: MemoryPlan) -> None:
        """Change plans between frames (the out-of-memory backoff: on to sequential offload)."""
        self.plan = plan
        if plan.offload == "sequential" and not self.streamed:
            self._move(["transformer", "controlnet"], "host")  # group offloading starts from the host
        self.denoise_phase()

    def prompt_phase(self) -> None:
        self._move(TEXT_ENCODERS, "device")

    def denoise_phase(self) -> None:
        """The text encoders leave; the denoising set arrives (or starts streaming). Idempotent."""
        self._move(TEXT_ENCODERS, "host")
        if self.plan.offload in ("none", "model"):
            self._move(DENOISING_SET, "device")
            return
        self._move(["vae"], "device")
        if not self.streamed:
            from diffusers.hooks import apply_group_offloading

            for name in ("transformer", "controlnet"):
                apply_group_offloading(
                    self.modules[name],
                    onload_device=self.device,
                    offload_device=self.host,
                    offload_type="block_level",
                    num_blocks_per_group=1,
                    use_stream=self.device.type == "cuda",
                )
            self.streamed = True
