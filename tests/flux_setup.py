"""The tiny FLUX checkpoint's config for the tests: small steps and sizes, the tiny components from disk."""

from vidup.config import load_config


def flux_config(tiny_flux, **overrides):
    values = {
        "engine": "flux",
        "flux.model": str(tiny_flux["base"]),
        "flux.controlnet": str(tiny_flux["controlnet"]),
        "flux.steps": 8,
        "flux.stage2_steps": 8,
        "flux.stage2_strength": 0.5,
        "size": "64",
        "quiet": True,
    }
    values.update(overrides)
    return load_config(overrides=values)
