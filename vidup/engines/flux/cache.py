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


class LaggedReadout:
    """A scalar measured on the device, read on the host one step later without stalling the GPU: `post` starts a
    non-blocking copy into pinned memory and records an event; `take` returns the value posted before, waiting at
    most for that earlier point of the stream (long done), never for the work queued since."""

    def __init__(self):
        self._host: torch.Tensor | None = None
        self._event = None
        self._ready = False

    def post(self, value: torch.Tensor) -> None:
        if self._host is None:
            self._host = torch.empty((), dtype=torch.float32, pin_memory=value.is_cuda)
        self._host.copy_(value.detach().float(), non_blocking=value.is_cuda)
        if value.is_cuda:
            self._event = self._event or torch.cuda.Event()  # re-recorded each step: one event per readout
            self._event.record()
        self._ready = True

    def take(self) -> float | None:
        if not self._ready:
            return None
        if self._event is not None:
            self._event.synchronize()
        self._ready = False
        return float(self._host)


class _State:
    """One denoising region's cache (the whole frame, or one tile of a tiled frame)."""

    def __init__(self, threshold: float, stats: CacheStats):
        self.threshold = threshold
        self.stats = stats
        self.head_residual: torch.Tensor | None = None  # the first block's residual on the last computed step
        self.body: torch.Tensor | None = None  # what the other blocks added on the last computed step
        self.compute = True
        self.change = LaggedReadout()  # the head's relative change, measured a step ago

    def _decide(self) -> bool:
        """Compute this step unless the first block's residual barely moved (relative mean absolute change below
        the threshold) at the step before, against the last computed step. Deciding from the previous step's
        measurement keeps the host from waiting on the GPU every step; residuals move smoothly across steps."""
        change = self.change.take()
        if self.head_residual is None or self.body is None or change is None:
            return True
        return change > self.threshold

    # The bookkeeping runs outside compiled graphs: a compiled block holds only the block's own work, and the
    # counters and decisions cannot become guards that recompile it.
    @torch.compiler.disable
    def after_head(self, hidden_in, encoder_out, hidden_out):
        residual = hidden_out - hidden_in
        self.compute = self._decide()
        if self.head_residual is not None:
            last = self.head_residual
            self.change.post((residual - last).abs().mean() / last.abs().mean().clamp_min(1e-12))
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
        def __init__(self, cache):
            super().__init__()
            self.cache = cache

        def new_forward(self, module, *args, **kwargs):
            encoder_out, hidden_out = self.fn_ref.original_forward(*args, **kwargs)
            return self.cache.state.after_head(kwargs["hidden_states"], encoder_out, hidden_out)

    class BodyHook(ModelHook):
        def __init__(self, cache):
            super().__init__()
            self.cache = cache

        def new_forward(self, module, *args, **kwargs):
            state = self.cache.state
            if state.skipping():  # the head already added what this block added last time
                return kwargs["encoder_hidden_states"], kwargs["hidden_states"]
            encoder_out, hidden_out = self.fn_ref.original_forward(*args, **kwargs)
            state.accumulate(kwargs["hidden_states"], hidden_out)
            return encoder_out, hidden_out

    return HeadHook, BodyHook


class FirstBlockCache:
    """Reuse the blocks after the first when the first block's residual barely changes between steps. Each region
    (a tile of a tiled frame) keeps its own state: tiles see different content at every step."""

    name = "first-block"

    def __init__(self, transformer: nn.Module, threshold: float):
        from diffusers.hooks import HookRegistry

        head_hook, body_hook = _hook_classes()
        self.threshold = threshold
        self.stats = CacheStats()
        self._states: dict = {}
        self.state = _State(threshold, self.stats)
        blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
        HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(head_hook(self), "vidup_fbc_head")
        for block in blocks[1:]:
            HookRegistry.check_if_exists_or_initialize(block).register_hook(body_hook(self), "vidup_fbc_body")

    @contextlib.contextmanager
    def run(self, name: str):
        """One denoising run (a stage of a frame): every region starts with computed steps."""
        self._states = {}
        self.state = _State(self.threshold, self.stats)
        try:
            yield
        finally:
            self._states = {}

    @contextlib.contextmanager
    def region(self, key):
        """The calls inside use `key`'s own state (a tile of a tiled frame)."""
        outer = self.state
        self.state = self._states.setdefault(key, _State(self.threshold, self.stats))
        try:
            yield
        finally:
            self.state = outer


class TaylorSeerCache:
    name = "taylorseer"

    def __init__(self, transformer: nn.Module, interval: int, warmup: int):
        from diffusers.hooks import TaylorSeerCacheConfig

        self.transformer = transformer
        dtype = next(transformer.parameters()).dtype
        transformer.enable_cache(
            TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup, taylor_factors_dtype=dtype)
        )
        self.stats = CacheStats()
        self._name = ""

    @contextlib.contextmanager
    def run(self, name: str):
        from diffusers.hooks import HookRegistry

        registry = HookRegistry.check_if_exists_or_initialize(self.transformer)
        registry.reset_stateful_hooks()
        self._name = name
        with self.transformer.cache_context(name):
            try:
                yield
            finally:
                registry.reset_stateful_hooks()

    @contextlib.contextmanager
    def region(self, key):
        """A tile's own extrapolation state (diffusers keys hook state by context name). Leaving it clears the
        run's context, so a tiled run makes every call inside a region."""
        with self.transformer.cache_context(f"{self._name}/{key}"):
            yield


class NoCache:
    name = "none"
    stats = CacheStats()

    @contextlib.contextmanager
    def run(self, name: str):
        yield

    @contextlib.contextmanager
    def region(self, key):
        yield


def make_cache(kind: str, transformer: nn.Module, threshold: float, interval: int, warmup: int):
    if kind == "first-block":
        return FirstBlockCache(transformer, threshold)
    if kind == "taylorseer":
        return TaylorSeerCache(transformer, interval, warmup)
    return NoCache()
