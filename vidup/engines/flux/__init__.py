"""The two-stage FLUX engine: components, memory plan, schedules, the sampler, caches, noise, propagation.

`FluxEngine` is imported on first use: config validation reads `schedule` without paying for diffusers,
transformers and torch.compile's machinery on every SR run."""


def __getattr__(name: str):
    if name == "FluxEngine":
        from vidup.engines.flux.engine import FluxEngine

        return FluxEngine
    raise AttributeError(name)


__all__ = ["FluxEngine"]
