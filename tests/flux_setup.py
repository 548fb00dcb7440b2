"""The tiny FLUX checkpoint's config for the tests: small steps and sizes, the tiny components from disk."""

from click.testing import CliRunner

from vidup.cli import main
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


def flux_cli(tiny_flux, *args):
    """`vidup upscale` with the flux engine on the tiny checkpoint, through the CLI; `args`: IN OUT and flags."""
    base = ["upscale", *map(str, args), "--engine", "flux", "--flux-model", str(tiny_flux["base"]), "--controlnet"]
    return CliRunner().invoke(main, [*base, str(tiny_flux["controlnet"])])
