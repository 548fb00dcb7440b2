"""The two-stage FLUX engine: components, memory plan, schedules, the sampler, caches, noise, propagation."""

from vidup.engines.flux.engine import FluxEngine

__all__ = ["FluxEngine"]
