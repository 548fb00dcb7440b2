"""The two-stage FLUX engine on a tiny random checkpoint, through the same loading code as real weights."""

import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from vidup.config import load_config
from vidup.engines.flux import FluxEngine
from vidup.errors import ModelNotFoundError
from media import frame_times, make_clip, packets, pattern

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory):
    from make_tiny_flux import build

    return build(tmp_path_factory.mktemp("tiny-flux"))


def flux_config(tiny_flux, **overrides):
    values = {"engine": "flux", "flux.model": str(tiny_flux["base"]), "flux.controlnet": str(tiny_flux["controlnet"]),
              "flux.steps": 4, "flux.stage2_steps": 4, "flux.stage2_strength": 0.5, "flux.offload": "none",
              "size": "64"}
    values.update(overrides)
    return load_config(overrides=values)


@pytest.fixture(scope="session")
def engine(tiny_flux):
    return FluxEngine(flux_config(tiny_flux))


FRAME = pattern(3, 40, 30)


def test_loads_from_folders_and_shares_components(engine):
    s1, s2 = engine.stage1, engine.stage2
    assert s1.transformer is s2.transformer and s1.vae is s2.vae
    assert s1.text_encoder is s2.text_encoder and s1.text_encoder_2 is s2.text_encoder_2
    assert type(s1).__name__ == "FluxImg2ImgPipeline" and type(s2).__name__ == "FluxControlNetImg2ImgPipeline"


def test_every_stage_returns_the_target_size(engine):
    out = engine.upscale(FRAME, (64, 48))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    stages = engine.stages()
    assert [s.name.split(":")[0] for s in stages] == ["stage 0", "stage 1", "stage 2"]
    assert all(s.image.shape == (48, 64, 3) for s in stages)
    assert not np.array_equal(stages[1].image, stages[2].image)  # stage 2 did something


def test_step_counts_follow_strength(engine):
    before = dict(engine.steps_run)
    engine.upscale(FRAME, (64, 48))
    from vidup.temporal.seeding import denoising_steps

    assert engine.steps_run["stage1"] - before["stage1"] == denoising_steps(4, 0.75) == 3
    assert engine.steps_run["stage2"] - before["stage2"] == denoising_steps(4, 0.5) == 2


def test_same_seed_same_output_other_seed_differs(tiny_flux, engine):
    a = engine.upscale(FRAME, (64, 48))
    b = engine.upscale(FRAME, (64, 48))
    assert np.array_equal(a, b)
    other = FluxEngine(flux_config(tiny_flux, **{"flux.seed": 7})).upscale(FRAME, (64, 48))
    assert not np.array_equal(a, other)


def test_lora_changes_output_and_scale_zero_restores_it(tiny_flux, engine):
    plain = engine.upscale(FRAME, (64, 48))
    lora = tiny_flux["lora"] / "pytorch_lora_weights.safetensors"
    with_lora = FluxEngine(flux_config(tiny_flux, **{"flux.loras": [f"{lora}:1.0"]})).upscale(FRAME, (64, 48))
    zero = FluxEngine(flux_config(tiny_flux, **{"flux.loras": [f"{tiny_flux['lora']}:0"]})).upscale(FRAME, (64, 48))
    assert np.abs(with_lora.astype(int) - plain).mean() > 0.5
    assert np.abs(zero.astype(int) - plain).max() <= 1


@pytest.mark.parametrize("mode", ["model", "sequential", "group"])
def test_offload_modes_are_accepted_on_cpu(tiny_flux, mode):
    out = FluxEngine(flux_config(tiny_flux, **{"flux.offload": mode})).upscale(FRAME, (64, 48))
    assert out.shape == (48, 64, 3)


@pytest.mark.parametrize("cache", ["first-block", "taylorseer"])
def test_cache_hooks_run_inside_their_context(tiny_flux, cache):
    out = FluxEngine(flux_config(tiny_flux, **{"flux.cache": cache, "flux.steps": 8})).upscale(FRAME, (64, 48))
    assert out.shape == (48, 64, 3)


def test_sr_init_uses_the_sr_engine(tiny_flux):
    engine = FluxEngine(flux_config(tiny_flux, **{"flux.init": "sr"}))
    engine.upscale(FRAME, (64, 48))
    init = engine.stages()[0]
    assert init.name == "stage 0: sr"
    from vidup.sizing import resize_rgb

    assert not np.array_equal(init.image, resize_rgb(FRAME, 64, 48))


def test_missing_component_names_it_and_the_path(tiny_flux, tmp_path):
    broken = tmp_path / "base"
    shutil.copytree(tiny_flux["base"], broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelNotFoundError, match=r"FLUX base model: .*base is missing vae"):
        FluxEngine(flux_config(tiny_flux, **{"flux.model": str(broken)}))
    with pytest.raises(ModelNotFoundError, match=r"no such folder: .*nowhere"):
        FluxEngine(flux_config(tiny_flux, **{"flux.controlnet": str(tmp_path / "nowhere")}))


def test_uncached_repo_id_is_an_error_with_the_fetch_command(tiny_flux, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError) as err:
        FluxEngine(flux_config(tiny_flux, **{"flux.model": "black-forest-labs/FLUX.1-dev"}))
    message = str(err.value)
    assert "not in the Hugging Face cache" in message and "hf download black-forest-labs/FLUX.1-dev" in message
    assert "--allow-download" in message


def test_prompt_is_encoded_once_per_clip(tiny_flux, tmp_path):
    from vidup.runner import upscale_video

    engine = FluxEngine(flux_config(tiny_flux))
    calls = []
    engine.stage1.text_encoder_2.register_forward_hook(lambda *a: calls.append(1))
    clip = make_clip(tmp_path / "in.mp4", frames=3, size=(40, 30))
    upscale_video(clip, tmp_path / "out.mp4", flux_config(tiny_flux, quiet=True), engine=engine)
    assert len(calls) == 1 and engine.prompt_encodings == 1


def test_cli_end_to_end_on_a_ten_frame_clip_with_audio(tiny_flux, tmp_path):
    from vidup.cli import main

    clip = make_clip(tmp_path / "in.mp4", frames=10, size=(40, 30))
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(main, [
        "upscale", str(clip), str(out), "--engine", "flux", "--flux-model", str(tiny_flux["base"]),
        "--controlnet", str(tiny_flux["controlnet"]), "--steps", "2", "--stage2-steps", "2", "--size", "64",
        "--offload", "none", "--prompt", "", "--seed", "3", "-q"])
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
    assert frame_times(out) == frame_times(clip)
    assert packets(out, "audio") == packets(clip, "audio")


def test_paper_preset_is_the_published_pipeline():
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "paper.toml")
    f = config.flux
    assert config.engine == "flux" and config.size == "1024" and f.init == "lanczos"
    assert f.strength == 0.75 and f.conditioning_scale == 0.6 and f.offload == "model" and f.steps == 28


def test_seeded_latents_have_the_right_shape_and_noise_level(engine):
    import torch

    from vidup.temporal.seeding import denoising_steps, encode_image, noised_packed_latents, start_timestep

    pipe = engine.stage1
    start = encode_image(pipe, pattern(1, 64, 48), torch.Generator().manual_seed(0))
    assert start.shape == (1, 16, 6, 8)  # VAE x8
    noise = torch.randn(start.shape, generator=torch.Generator().manual_seed(1))
    timestep, steps = start_timestep(pipe, 28, 0.4, 48, 64, "cpu")
    assert steps == denoising_steps(28, 0.4) == 12
    packed = noised_packed_latents(pipe, start, noise, timestep)
    assert packed.shape == (1, 3 * 4, 64)  # 2x2 patches of 16 channels
    sigma = float(timestep) / 1000.0
    expected = pipe._pack_latents((1 - sigma) * start + sigma * noise, 1, 16, 6, 8)
    assert torch.allclose(packed, expected, atol=1e-5) and 0.2 < sigma < 0.7


@pytest.mark.parametrize("noise_mode", ["fixed", "warped"])
def test_seeding_propagates_with_fewer_steps_and_keyframes_restore_full_strength(tiny_flux, noise_mode):
    from vidup.runner import Upscaler

    config = flux_config(tiny_flux, **{"flux.steps": 8, "flux.stage2_steps": 8, "temporal.flux_strength": 0.25,
                                       "temporal.keyframe_interval": 3, "temporal.flux_noise": noise_mode})
    upscaler = Upscaler(config, FluxEngine(config))
    frames = [np.roll(pattern(0, 40, 30), shift, axis=1) for shift in range(5)]  # a slow pan
    records = []
    for frame in frames:
        upscaler.upscale_frame(frame)
        records.append(dict(upscaler.engine.last_frame))
    assert [r["propagated"] for r in records] == [False, True, True, False, True]
    key, propagated = records[0]["steps"], records[1]["steps"]
    from vidup.temporal.seeding import denoising_steps

    assert key == denoising_steps(8, 0.75) + denoising_steps(8, 0.5)
    assert propagated == 2 * denoising_steps(8, 0.25) and propagated < key
    upscaler.reset()  # a declared cut
    upscaler.upscale_frame(frames[0])
    assert upscaler.engine.last_frame["propagated"] is False


def test_a_frame_the_flow_explains_too_little_of_is_a_keyframe(tiny_flux):
    from vidup.runner import Upscaler

    frames = [np.roll(pattern(0, 40, 30), shift, axis=1) for shift in range(2)]  # a pan: the wrapped edge is new
    seen = {}
    for min_trusted in (0.0, 0.99):
        config = flux_config(tiny_flux, **{"flux.steps": 8, "flux.stage2_steps": 8,
                                           "temporal.flux_min_trusted": min_trusted})
        upscaler = Upscaler(config, FluxEngine(config))
        records = []
        for frame in frames:
            upscaler.upscale_frame(frame)
            records.append(dict(upscaler.engine.last_frame))
        seen[min_trusted] = records
    assert seen[0.0][0]["trusted"] is None and 0.5 < seen[0.0][1]["trusted"] < 0.99  # mostly explained, not all
    assert [r["propagated"] for r in seen[0.0]] == [False, True]
    assert [r["propagated"] for r in seen[0.99]] == [False, False]
    assert seen[0.99][1]["steps"] == seen[0.99][0]["steps"] > seen[0.0][1]["steps"]


def test_seeding_lowers_warping_error_against_unseeded(tiny_flux):
    from vidup.metrics import evaluate
    from vidup.runner import Upscaler

    frames = [np.roll(pattern(0, 40, 30), shift, axis=1) for shift in range(6)]
    ewarp = {}
    for enabled in (False, True):
        config = flux_config(tiny_flux, **{"temporal.enabled": enabled, "flux.steps": 8, "flux.stage2_steps": 8})
        outputs = list(Upscaler(config, FluxEngine(config)).upscale(frames))
        ewarp[enabled] = evaluate(outputs, inputs=frames).ewarp_x1e3
    assert ewarp[True] < ewarp[False]
