from pathlib import Path

import pytest

from vidup.config import VidupConfig, load_config
from vidup.errors import ConfigError
from vidup.sizing import SizeSpec, resize_rgb

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.toml"))


def test_defaults_are_valid():
    config = load_config()
    assert config.engine == "sr" and config.sr.model == "clear-reality-x4" and config.output.codec == "libx264"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_preset_loads(path):
    assert isinstance(load_config(path), VidupConfig)


def test_default_preset_matches_the_dataclass_defaults():
    assert load_config(Path(CONFIGS[0]).parent / "default.toml") == VidupConfig()


def test_file_then_overrides(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('size = "640x360"\n[sr]\ntile = 128\n[output]\ncrf = 22\n')
    config = load_config(path, {"output.crf": "20", "quiet": True})
    assert config.size == "640x360" and config.sr.tile == 128 and config.output.crf == 20 and config.quiet


@pytest.mark.parametrize(
    "text,message",
    [
        ("flavour = 1\n", "unknown setting 'flavour'"),
        ("[sr]\ntile = 'big'\n", "cannot use"),
        ("[output]\ncodec = 'h266'\n", "codec must be"),
        ("size = 'x'\n", "--size must be"),
        ("precision = 'int4'\n", "precision must be"),
        ("[temporal.history]\nmode = 'blurry'\n", "history.mode must be one of rectified, highpass, got 'blurry'"),
        ("[flux]\noffload = 'cloud'\n", "offload must be one of auto, none, model, sequential"),
        ("[output]\npreset = 'quick'\n", "preset must be one of ultrafast, superfast"),
        ("engine = 'magic'\n", "unknown engine"),
        ("not toml at all [\n", "invalid TOML"),
    ],
)
def test_bad_files_are_teaching_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize(
    "spec,size,expected",
    [
        (SizeSpec.parse("1024"), (256, 144), (1024, 576)),
        (SizeSpec.parse("1024"), (175, 99), (1024, 580)),  # 1024 * 99 / 175 = 579.3: the nearest even side
        (SizeSpec.parse("1024"), (144, 256), (576, 1024)),
        (SizeSpec.parse("1920"), (480, 270), (1920, 1080)),  # HD stays 1080 lines
        (SizeSpec.parse("1001x563"), (256, 144), (1002, 564)),
        (SizeSpec.parse(scale=2.5), (640, 272), (1600, 680)),
    ],
)
def test_target_sizes_are_even(spec, size, expected):
    out = spec.resolve(*size)
    assert out == expected and out[0] % 2 == 0 and out[1] % 2 == 0


def test_resize_filters():
    import numpy as np

    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    small = resize_rgb(checker, 32, 32)
    assert abs(int(small.mean()) - 127) <= 1 and small.std() < 2  # area filter averages, no aliasing
    assert resize_rgb(checker, 128, 128).shape == (128, 128, 3)


def test_cli_help_quotes_the_config_defaults():
    """The help texts read the defaults from vidup.config, so they cannot drift from what runs."""
    import re

    from click.testing import CliRunner

    from vidup.cli import main
    from vidup.config import VidupConfig

    d = VidupConfig()
    text = " ".join(CliRunner().invoke(main, ["upscale", "--help"]).output.split())
    quoted = {
        "--steps": d.flux.steps,
        "--stage2-strength": d.flux.stage2_strength,
        "--stage2-steps": d.flux.stage2_steps,
        "--strength": d.flux.strength,
        "--guidance": d.flux.guidance,
        "--conditioning-scale": d.flux.conditioning_scale,
        "--turbo-steps": d.flux.turbo_steps,
        "--tile": d.sr.tile,
    }
    for flag, value in quoted.items():
        match = re.search(rf"{flag} \w+ [^(]*\(([0-9.]+)", text)
        assert match and float(match.group(1)) == float(value), (flag, match and match.group(0))
