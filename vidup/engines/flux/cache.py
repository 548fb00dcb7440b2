"""Step caches for the FLUX transformer that are never wrong with a ControlNet.

diffusers' FirstBlockCache stores "tail output - first block output" as the residual to reuse. FLUX adds the
ControlNet's residuals after each double block, outside the blocks, so that stored residual already holds them;
on a reused step the transformer's loop adds the fresh ones again and every ControlNet residual counts twice.

`FirstBlockCache` here stores the sum of what the blocks after the first add themselves (each block's output
minus its input). The ControlNet residuals stay outside the cache and are added fresh on every step, so a reused
step with unchanged inputs equals the computed one exactly, with or without a ControlNet.

TaylorSeer (diffusers) extrapolates attention outputs only; ControlNet residuals are never inside what it predicts,
so it is used as diffusers ships it, with its state reset at the start of every stage of every frame.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CacheStats:
    computed: int = 0
    reused: int = 0


class _State:
    def __init__(self, threshold: float):
        self.threshold = threshold
        self.stats = CacheStats()
        self.reset()

    def reset(self) -> None:
        self.head_residual: torch.Tensor | None = None  # the first block's residual on the last computed step
        self.body: torch.Tensor | None = None  # what the other blocks added on the last computed step
        self.compute = True

    def _decide(self, head_residual: torch.Tensor) -> bool:
        """Compute the rest of this step unless the first block's residual barely moved since the last computed
        step (relative mean absolute change below the threshold)."""
        if self.head_residual is None or self.body is None:
            return True
        change = (head_residual - self.head_residual).abs().mean() / self.head_residual.abs().mean().clamp_min(1e-12)
        return bool(change.item() > self.threshold)

    # The bookkeeping runs outside compiled graphs: a compiled block holds only the block's own work, and the
    # counters and decisions cannot become guards that recompile it.
    @torch.compiler.disable
    def after_head(self, hidden_in, encoder_out, hidden_out):
        residual = hidden_out - hidden_in
        self.compute = self._decide(residual)
        if self.compute:
            self.head_residual, self.body = residual, torch.zeros_like(hidden_out)
            self.stats.computed += 1
            return encoder_out, hidden_out
        self.stats.reused += 1
        return encoder_out, hidden_out + self.body

    @torch.compiler.disable
    def skipping(self) -> bool:
        return not self.compute

    @torch.compiler.disable
    def accumulate(self, hidden_in, hidden_out) -> None:
        self.body += hidden_out - hidden_in


def _hook_classes():
    from diffusers.hooks import ModelHook

    class HeadHook(ModelHook):
        def __init__(self, state: _State):
            super().__init__()
            self.state = state

        def new_forward(self, module, *args, **kwargs):
            encoder_out, hidden_out = self.fn_ref.original_forward(*args, **kwargs)
            return self.state.after_head(kwargs["hidden_states"], encoder_out, hidden_out)

    class BodyHook(ModelHook):
        def __init__(self, state: _State):
            super().__init__()
            self.state = state

        def new_forward(self, module, *args, **kwargs):
            if self.state.skipping():  # the head already added what this block added last time
                return kwargs["encoder_hidden_states"], kwargs["hidden_states"]
            encoder_out, hidden_out = self.fn_ref.original_forward(*args, **kwargs)
            self.state.accumulate(kwargs["hidden_states"], hidden_out)
            return encoder_out, hidden_out

    return HeadHook, BodyHook


class FirstBlockCache:
    """Reuse the blocks after the first when the first block's residual barely changes between steps."""

    name = "first-block"

    def __init__(self, transformer: nn.Module, threshold: float):
        from diffusers.hooks import HookRegistry

        head_hook, body_hook = _hook_classes()
        self._state = _State(threshold)
        blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
        HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(head_hook(self._state), "vidup_fbc_head")
        for block in blocks[1:]:
            HookRegistry.check_if_exists_or_initialize(block).register_hook(body_hook(self._state), "vidup_fbc_body")

    @property
    def stats(self) -> CacheStats:
        return self._state.stats

    @contextlib.contextmanager
    def run(self, name: str):
        """One denoising run (a stage of a frame): starts with a computed step."""
        self._state.reset()
        try:
            yield
        finally:
            self._state.reset()


class TaylorSeerCache:
    name = "taylorseer"

    def __init__(self, transformer: nn.Module, interval: int, warmup: int):
        from diffusers.hooks import TaylorSeerCacheConfig

        self.transformer = transformer
        dtype = next(transformer.parameters()).dtype
        transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup,
                                                       taylor_factors_dtype=dtype))
        self.stats = CacheStats()

    @contextlib.contextmanager
    def run(self, name: str):
        from diffusers.hooks import HookRegistry

        registry = HookRegistry.check_if_exists_or_initialize(self.transformer)
        registry.reset_stateful_hooks()
        with self.transformer.cache_context(name):
            try:
                yield
            finally:
                registry.reset_stateful_hooks()


class NoCache:
    name = "none"
    stats = CacheStats()

    @contextlib.contextmanager
    def run(self, name: str):
        yield


def make_cache(kind: str, transformer: nn.Module, threshold: float, interval: int, warmup: int):
    if kind == "first-block":
        return FirstBlockCache(transformer, threshold)
    if kind == "taylorseer":
        return TaylorSeerCache(transformer, interval, warmup)
    return NoCache()
