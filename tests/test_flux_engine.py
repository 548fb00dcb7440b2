"""The two-stage FLUX engine on a tiny random checkpoint, through the same loading code as real weights.

These tests catch what would go wrong on a GPU without one: dtypes of every component, the memory plan chosen
from a given memory size, every module move, cache hooks against computed steps, the sampler against the stock
diffusers pipelines."""

import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidup.config import load_config
from vidup.engines.flux.engine import FluxEngine
from vidup.engines.flux.memory import MemoryPlan, choose_memory_plan, working_bytes
from vidup.engines.flux.latents import pack, unpack
from vidup.engines.flux.sampler import noise_to, start
from vidup.engines.flux.schedule import Schedules, image_seq_len
from vidup.steps import denoising_steps
from vidup.errors import ConfigError, ModelNotFoundError
from vidup.sizing import resize_rgb
from flux_setup import flux_cli, flux_config
from media import frame_times, make_clip, packets, pattern

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
GIB = 2**30


@pytest.fixture(scope="session")
def engine(tiny_flux):
    engine = FluxEngine(flux_config(tiny_flux))
    engine.place((64, 48))
    return engine


FRAME = pattern(3, 40, 30)
PAN = [np.roll(pattern(0, 40, 30), shift, axis=1) for shift in range(6)]  # the wrapped edge is new content


def upscaler(config):
    from vidup.upscaler import Upscaler

    return Upscaler(config, FluxEngine(config))


# --- loading, dtypes, layout ----------------------------------------------------------------------------------


@pytest.mark.gpu
def test_every_component_is_in_the_placement_dtype(tiny_flux):
    engine = FluxEngine(flux_config(tiny_flux, precision="bf16"))
    assert engine.components.dtypes() == dict.fromkeys(
        ("transformer", "controlnet", "vae", "text_encoder", "text_encoder_2"), torch.bfloat16
    )
    out = engine.upscale(FRAME, (64, 48)).image  # and a bf16 frame runs: no dtype mismatch anywhere
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8


@pytest.mark.gpu
def test_fp16_never_reaches_t5():
    from vidup.engines.flux.components import component_dtypes

    dtypes = component_dtypes(torch.float16, torch.device("cpu"))
    assert dtypes["text_encoder_2"] == torch.bfloat16
    assert {dtypes[k] for k in ("transformer", "controlnet", "vae", "text_encoder")} == {torch.float16}


def test_tiny_controlnet_mirrors_the_upscaler_layout(engine):
    transformer, controlnet = engine.components.transformer, engine.components.controlnet
    assert len(controlnet.single_transformer_blocks) == 0  # the upscaler has double blocks only
    assert 0 < len(controlnet.transformer_blocks) < len(transformer.transformer_blocks)
    assert int(np.ceil(len(transformer.transformer_blocks) / len(controlnet.transformer_blocks))) > 1


def test_every_stage_returns_the_target_size(engine):
    result = engine.upscale(FRAME, (64, 48))
    out = result.image
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    stages = result.stages()
    assert [s.name.split(":")[0] for s in stages] == ["stage 0", "stage 1", "stage 2"]
    assert all(s.image.shape == (48, 64, 3) for s in stages)
    assert not np.array_equal(stages[1].image, stages[2].image)  # stage 2 did something


def test_step_counts_follow_strength(engine):
    before = dict(engine.stats.steps_run)
    engine.upscale(FRAME, (64, 48))
    assert engine.stats.steps_run["stage1"] - before["stage1"] == denoising_steps(8, 0.75) == 6
    assert engine.stats.steps_run["stage2"] - before["stage2"] == denoising_steps(8, 0.5) == 4


def test_same_seed_same_output_other_seed_differs(tiny_flux, engine):
    a = engine.upscale(FRAME, (64, 48)).image
    b = engine.upscale(FRAME, (64, 48)).image
    assert np.array_equal(a, b)
    other = FluxEngine(flux_config(tiny_flux, **{"flux.seed": 7})).upscale(FRAME, (64, 48)).image
    assert not np.array_equal(a, other)


# --- the sampler against the stock pipelines -------------------------------------------------------------------


def _stock_kwargs(engine):
    from diffusers import FlowMatchEulerDiscreteScheduler

    c = engine.components
    return dict(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(c.scheduler_config),
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        text_encoder_2=c.text_encoder_2,
        tokenizer_2=c.tokenizer_2,
        transformer=c.transformer,
    )


def test_prompt_encoding_equals_the_pipeline(engine):
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**_stock_kwargs(engine))
    tokens, pooled, _ = pipe.encode_prompt(engine.flux.prompt, prompt_2=None, device="cpu", max_sequence_length=512)
    assert torch.equal(tokens, engine.prompt.tokens) and torch.equal(pooled, engine.prompt.pooled)


def test_keyframe_stage1_reproduces_flux_img2img(engine):
    from diffusers import FluxImg2ImgPipeline
    from PIL import Image

    init = resize_rgb(FRAME, 64, 48)
    stock = FluxImg2ImgPipeline(**_stock_kwargs(engine))(
        image=Image.fromarray(init),
        height=48,
        width=64,
        strength=0.75,
        num_inference_steps=8,
        guidance_scale=3.5,
        prompt_embeds=engine.prompt.tokens,
        pooled_prompt_embeds=engine.prompt.pooled,
        output_type="np",
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    generator = torch.Generator().manual_seed(5)  # the pipeline's draws, in its order: VAE sample, then noise
    clean = engine.codec.encode(init, generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    plan = engine.schedules.keyframe(8, 0.75, image_seq_len(48, 64))
    ours = engine.codec.decode(engine.run_stage("stage1", plan, clean, noise))
    assert np.abs(stock).max() > 0.1 and np.abs(ours - stock).max() < 1e-5


def test_keyframe_stage2_reproduces_flux_controlnet_img2img(engine):
    from diffusers import FluxControlNetImg2ImgPipeline
    from PIL import Image

    stage1 = pattern(7, 64, 48)
    stock = FluxControlNetImg2ImgPipeline(**_stock_kwargs(engine), controlnet=engine.components.controlnet)(
        image=Image.fromarray(stage1),
        control_image=Image.fromarray(stage1),
        height=48,
        width=64,
        strength=0.5,
        num_inference_steps=8,
        guidance_scale=3.5,
        controlnet_conditioning_scale=engine.flux.conditioning_scale,
        prompt_embeds=engine.prompt.tokens,
        pooled_prompt_embeds=engine.prompt.pooled,
        output_type="np",
        generator=torch.Generator().manual_seed(9),
    ).images[0]
    generator = torch.Generator().manual_seed(9)  # control encode, init encode, noise: the pipeline's order
    control = engine.codec.encode(stage1, generator=generator)
    clean = engine.codec.encode(stage1, generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    plan = engine.schedules.keyframe(8, 0.5, image_seq_len(48, 64))
    ours = engine.codec.decode(engine.run_stage("stage2", plan, clean, noise, control=control))
    assert np.abs(ours - stock).max() < 1e-5
    no_control = engine.codec.decode(engine.run_stage("stage2", plan, clean, noise, control=control * 0 + 3))
    assert np.abs(no_control - stock).max() > 1e-3  # the control image matters: the comparison can fail


def test_vae_encodes_take_the_mean_and_draw_no_noise(engine):
    state = torch.random.get_rng_state()
    a, b = engine.codec.encode(FRAME[:32, :32]), engine.codec.encode(FRAME[:32, :32])
    assert torch.equal(a, b) and torch.equal(state, torch.random.get_rng_state())


# --- schedules and propagation ---------------------------------------------------------------------------------


def test_propagated_schedules_start_late_without_new_content_and_coarsely_with_it(engine):
    schedules, seq = Schedules(engine.components.scheduler_config), image_seq_len(576, 1024)
    key = schedules.keyframe(28, 0.75, seq)
    assert key.steps == 21
    calm = schedules.propagated(28, 0.75, 0.4, seq, new_content=False, new_content_steps=3)
    busy = schedules.propagated(28, 0.75, 0.4, seq, new_content=True, new_content_steps=3)
    assert calm.steps == denoising_steps(28, 0.4) == 12 and float(calm.sigmas[0]) == calm.hand_off
    assert busy.steps == 3 + 12 and float(busy.sigmas[0]) == float(key.sigmas[0])  # new content: full strength
    assert torch.equal(busy.sigmas[3:], key.sigmas[-13:])  # below the hand-off, the keyframe's own steps
    assert torch.all(busy.sigmas[1:] < busy.sigmas[:-1])


def test_trusted_latents_equal_the_noised_prior_at_hand_off_and_untrusted_follow_the_keyframe(engine):
    h, w = 6, 8
    generator = torch.Generator().manual_seed(3)
    target, clean, noise = (torch.randn(1, 16, h, w, generator=generator) for _ in range(3))
    confidence = np.zeros((h, w), np.float32)
    confidence[:, :4] = 1.0  # left half trusted, right half new
    plan, pin = engine.propagator.plan(8, 0.75, 0.4, confidence, target, noise)
    key = engine.schedules.keyframe(8, 0.75, image_seq_len(48, 64))
    assert float(plan.sigmas[0]) == float(key.sigmas[0])
    seen = []
    engine.on_step = lambda stage, step: seen.append((step.sigma_next, step.x.clone()))
    try:
        engine.run_stage("stage1", plan, clean, noise, pin=pin)
    finally:
        engine.on_step = None
    left, right = (
        (slice(None), slice(None), slice(None), slice(0, 4)),
        (slice(None), slice(None), slice(None), slice(4, 8)),
    )
    hand = [i for i, (sigma, _) in enumerate(seen) if abs(sigma - plan.hand_off) < 1e-6]
    assert len(hand) == 1
    for sigma, x in seen[: hand[0] + 1]:  # held, down to and including the hand-off
        x = unpack(x, h, w)
        assert torch.allclose(x[left], noise_to(target, noise, sigma)[left], atol=1e-6)
        assert not torch.allclose(x[right], noise_to(target, noise, sigma)[right], atol=1e-2)
    after = unpack(seen[hand[0] + 1][1], h, w)
    assert not torch.allclose(after[left], noise_to(target, noise, seen[hand[0] + 1][0])[left], atol=1e-4)
    # the untrusted half started where a keyframe starts: the current frame at the keyframe's sigma
    x0 = unpack(start(pack(clean), pack(noise), plan.sigmas, pin), h, w)
    assert torch.allclose(x0[right], noise_to(clean, noise, plan.sigmas[0])[right])
    assert torch.allclose(x0[left], noise_to(target, noise, plan.sigmas[0])[left])


def test_transported_noise_stays_white_through_a_sub_pixel_pan():
    from vidup.engines.flux.noise import TransportedNoise, fresh_noise, keyframe_noise

    shape = (1, 16, 64, 64)
    field = TransportedNoise.start(keyframe_noise(shape, 0, 0))
    flow = np.zeros((64, 64, 2), np.float32)
    flow[32:, :, 0] = 0.37  # the bottom half pans a third of a latent pixel per frame, the top half stands still
    valid = np.ones((64, 64), bool)
    for frame in range(24):
        field = field.advance(flow, valid, fresh_noise(shape, 0, 0, frame))
    n = field.noise[0].numpy()
    for a, b in ((n[:, :, :-1], n[:, :, 1:]), (n[:, :-1, :], n[:, 1:, :])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.05
    blocks = n.reshape(16, 4, 16, 4, 16).transpose(1, 3, 0, 2, 4).reshape(16, -1)
    assert np.all(np.abs(blocks.var(axis=1) - 1) < 0.1)  # local variance, static and moving parts alike
    # and the moving half really moved with the scene: 24 x 0.37 = 8.9 latent pixels
    start = keyframe_noise(shape, 0, 0)[0].numpy()
    assert np.array_equal(n[:, 40, 20:40], start[:, 40, 11:31])
    assert np.array_equal(n[:, 10, :], start[:, 10, :])


def test_seeding_propagates_with_fewer_steps_and_resets_at_cuts(tiny_flux):
    config = flux_config(tiny_flux, **{"temporal.flux.keyframe_interval": 3, "temporal.flux.new_content_steps": 1})
    up = upscaler(config)
    records = []
    for frame in PAN[:5]:
        up.upscale_frame(frame)
        records.append(dict(up.engine.stats.last_frame))
    assert [r["kind"] for r in records] == ["keyframe", "propagated", "propagated", "keyframe", "propagated"]
    assert records[0]["steps"] == denoising_steps(8, 0.75) + denoising_steps(8, 0.5)
    assert all(r["steps"] < records[0]["steps"] for r in records if r["propagated"])
    up.reset()  # a declared cut
    up.upscale_frame(PAN[0])
    assert up.engine.stats.last_frame["kind"] == "keyframe"


def test_keyframes_only_at_cuts_by_default(tiny_flux):
    up = upscaler(flux_config(tiny_flux))
    kinds = []
    for frame in PAN:
        up.upscale_frame(frame)
        kinds.append(up.engine.stats.last_frame["kind"])
    assert kinds == ["keyframe"] + ["propagated"] * 5 and up.engine.stats.frames == {"keyframe": 1, "propagated": 5}


def test_vae_encodes_per_frame(tiny_flux):
    for control_image in ("stage1", "input"):
        up = upscaler(flux_config(tiny_flux, **{"flux.control_image": control_image}))
        encodes = []
        for frame in PAN[:3]:
            up.upscale_frame(frame)
            encodes.append(up.engine.stats.last_frame["vae_encodes"])
        # keyframe: the init and the stage-1 result (control and start share one encode); propagated frames add
        # the two warped previous results
        assert encodes == [2, 4, 4]


def test_a_frame_the_flow_explains_too_little_of_is_a_keyframe(tiny_flux):
    seen = {}
    for min_trusted in (0.0, 0.99):
        up = upscaler(flux_config(tiny_flux, **{"temporal.flux.min_trusted": min_trusted}))
        records = []
        for frame in [pattern(0, 40, 30), np.roll(pattern(0, 40, 30), 1, axis=1)[:, ::-1]]:
            up.upscale_frame(np.ascontiguousarray(frame))
            records.append(dict(up.engine.stats.last_frame))
        seen[min_trusted] = records
    assert seen[0.0][1]["kind"] == "propagated" and seen[0.99][1]["kind"] == "keyframe"


def test_a_propagated_frame_is_held_on_the_warped_previous_result(tiny_flux, monkeypatch):
    """With an oracle denoiser that flows every latent straight to where it was pinned, a fully trusted propagated
    frame comes out as the warped previous result (through the VAE), not as a fresh generation."""
    from vidup.pixels import from_unit

    config = flux_config(tiny_flux, **{"temporal.flux.color_fix": "none"})
    up = upscaler(config)
    engine = up.engine
    pins = []
    real_propagation = engine.propagator.plan

    def remember(*args, **kwargs):
        plan, pin = real_propagation(*args, **kwargs)
        pins.append(pin)
        return plan, pin

    def oracle(cond, control=None):
        def velocity(x, sigma):  # the exact velocity toward the pinned target (or toward 0 without one)
            target = (
                pins[-1].target if pins and engine.stats.last_frame.get("next") == "propagated" else torch.zeros_like(x)
            )
            return (x - target) / sigma

        return velocity

    monkeypatch.setattr(engine.propagator, "plan", remember)
    static = [pattern(0, 40, 30)] * 3  # a still scene: everything trusted
    up.upscale_frame(static[0])
    engine.stats.last_frame["next"] = "propagated"
    monkeypatch.setattr(engine, "denoiser", oracle)
    first = up.temporal._previous_output.copy()
    second = up.upscale_frame(static[1])
    assert engine.stats.last_frame["kind"] == "propagated" and len(pins) == 2
    through_vae = from_unit(engine.codec.decode(engine.codec.encode(first)), np.uint8)
    assert np.abs(second.astype(int) - through_vae).max() <= 1


# --- memory ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def full_size():
    """Bytes of every FLUX.1-dev component in bf16, from the real configs on the meta device (no memory used)."""
    from make_tiny_flux import random_modules

    from vidup.engines.flux.components import weight_bytes

    return {name: weight_bytes(m) for name, m in random_modules("full", torch.bfloat16, "meta").items()}


def test_full_size_weights(full_size):
    assert 23.5e9 < full_size["transformer"] < 24.0e9 and 9.4e9 < full_size["text_encoder_2"] < 9.6e9
    assert 3.4e9 < full_size["controlnet"] < 3.7e9


@pytest.mark.parametrize("free_gib,expected", [(79, "none"), (139, "none"), (40, "model"), (24, "sequential")])
def test_memory_plan_from_free_memory(full_size, free_gib, expected):
    plan = choose_memory_plan(
        "auto", torch.device("cuda"), full_size, working_bytes(1024, 1024, 4.0), free_gib * GIB, 2 * GIB
    )
    assert plan.offload == expected, plan.reason


def test_memory_plan_respects_requests_and_cpu(full_size):
    assert choose_memory_plan("model", torch.device("cuda"), full_size, 0, 200 * GIB, 0).offload == "model"
    assert choose_memory_plan("auto", torch.device("cpu"), full_size, 0, None, 0).offload == "none"


@pytest.mark.parametrize("offload", ["none", "model"])
def test_no_module_moves_while_frames_run_and_text_encoders_leave(tiny_flux, offload):
    engine = FluxEngine(flux_config(tiny_flux))
    engine.place((64, 48), plan=MemoryPlan(offload, "test"))
    moves = list(engine.placer.moves)
    assert moves.index(("text_encoder", "host")) > moves.index(("text_encoder", "device"))
    assert engine.placer.location == {
        "transformer": "device",
        "controlnet": "device",
        "vae": "device",
        "text_encoder": "host",
        "text_encoder_2": "host",
    }
    assert sum(1 for name, where in moves if where == "device") == 5  # each module uploaded once per clip
    from vidup.upscaler import Upscaler

    runner = Upscaler(engine.config, engine)
    for frame in PAN[:3]:
        runner.upscale_frame(frame)
    assert engine.placer.moves == moves


def test_sequential_plan_streams_blocks_and_runs(tiny_flux):
    engine = FluxEngine(flux_config(tiny_flux))
    engine.place((64, 48), plan=MemoryPlan("sequential", "test"))
    assert engine.placer.location["vae"] == "device" and engine.placer.streamed
    assert engine.upscale(FRAME, (64, 48)).image.shape == (48, 64, 3)


def test_out_of_memory_backoff_turns_on_vae_tiling_then_streams_blocks_and_keeps_the_frame(tiny_flux):
    """A FLUX frame that runs out of memory is retried: VAE tiling first, then sequential offload; the frame
    comes out (the same as without the fault), and a segment start restores the VAE tiling setting."""
    from vidup.upscaler import Upscaler

    config = flux_config(tiny_flux, **{"flux.vae_tiling": False})
    clean = FluxEngine(config)
    clean.place((64, 48))
    expected = clean.upscale(FRAME, (64, 48)).image
    engine = FluxEngine(config)
    engine.place((64, 48))
    start = engine.footprint()
    assert start == (False, "none")
    real, failures = engine.components.transformer.forward, []

    def forward(*args, **kwargs):  # out of memory until blocks stream in
        if not engine.placer.streamed:
            failures.append(1)
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    engine.components.transformer.forward = forward
    runner = Upscaler(config, engine)
    out = runner.upscale_frame(FRAME)
    assert len(failures) == 2 and runner.warnings == [
        "out of memory at frame 0: FLUX VAE tiling on, for the rest of the segment",
        "out of memory at frame 0: FLUX offload none -> sequential, for the rest of the segment",
    ]
    assert engine.footprint() == (True, "sequential") and engine.placer.location["vae"] == "device"
    np.testing.assert_allclose(out.astype(int), expected.astype(int), atol=1)
    assert engine.shrink() is None  # nothing left: the next failure is an EngineMemoryError
    engine.set_footprint(start)
    assert engine.footprint() == (False, "sequential")  # tiling back off; streaming stays for the engine's life


# --- caches ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["first-block", "taylorseer"])
def test_a_reused_step_equals_a_computed_one_with_the_controlnet(tiny_flux, cache):
    engine = FluxEngine(
        flux_config(
            tiny_flux,
            **{
                "flux.cache": cache,
                "flux.cache_threshold": 10.0,
                "flux.taylorseer_warmup": 1,
                "flux.taylorseer_interval": 3,
            },
        )
    )
    engine.place((64, 48))
    generator = torch.Generator().manual_seed(0)
    x = pack(torch.randn(1, 16, 6, 8, generator=generator))
    control = pack(torch.randn(1, 16, 6, 8, generator=generator))
    velocity = engine.denoiser(engine.conditioning(6, 8), control)
    attention_calls = []
    engine.components.transformer.transformer_blocks[1].attn.to_q.register_forward_hook(
        lambda *a: attention_calls.append(1)
    )
    with engine.cache.run("test"):
        outputs = [velocity(x, torch.tensor(0.5)) for _ in range(4)]
    assert len(attention_calls) < 4  # some steps were really reused
    for out in outputs[1:]:
        assert torch.allclose(out, outputs[0], atol=1e-5), (out - outputs[0]).abs().max()
    if cache == "first-block":  # the decision for a step is measured at the step before: two computed first
        assert engine.cache.stats.reused == 2 and engine.cache.stats.computed == 2


def test_cached_stages_start_fresh_every_frame(tiny_flux):
    engine = FluxEngine(flux_config(tiny_flux, **{"flux.cache": "first-block", "flux.cache_threshold": 10.0}))
    engine.upscale(FRAME, (64, 48))
    engine.upscale(FRAME, (64, 48))
    assert engine.cache.stats.computed == 8  # the first two steps of each stage of each frame are computed


# --- LoRA, turbo, compile ---------------------------------------------------------------------------------------


def test_lora_changes_output_and_scale_zero_restores_it(tiny_flux, engine):
    plain = engine.upscale(FRAME, (64, 48)).image
    lora = tiny_flux["lora"] / "pytorch_lora_weights.safetensors"
    with_lora = FluxEngine(flux_config(tiny_flux, **{"flux.loras": [f"{lora}:1.0"]})).upscale(FRAME, (64, 48)).image
    zero = (
        FluxEngine(flux_config(tiny_flux, **{"flux.loras": [f"{tiny_flux['lora']}:0"]})).upscale(FRAME, (64, 48)).image
    )
    assert np.abs(with_lora.astype(int) - plain).mean() > 0.5
    assert np.abs(zero.astype(int) - plain).max() <= 1


def test_turbo_lora_runs_on_propagated_frames_only_with_its_own_steps(tiny_flux):
    config = flux_config(tiny_flux, **{"flux.turbo_lora": str(tiny_flux["turbo"]), "flux.turbo_steps": 4})
    up = upscaler(config)
    seen = []
    for frame in PAN[:3]:
        up.upscale_frame(frame)
        seen.append(
            (up.engine.stats.last_frame["kind"], up.engine.active_adapters, up.engine.stats.last_frame["steps"])
        )
    assert [s[:2] for s in seen] == [("keyframe", []), ("propagated", ["turbo"]), ("propagated", ["turbo"])]
    # the turbo schedule: 4 steps, fewer than the 8-step schedule could ever run on a propagated frame
    assert (
        seen[1][2]
        <= denoising_steps(4, 0.75) + denoising_steps(4, 0.5)
        < denoising_steps(8, 0.4) + denoising_steps(8, 0.25)
    )


@pytest.mark.slow
def test_switching_adapters_per_frame_does_not_recompile(tiny_flux):
    import torch._dynamo

    compiled = []

    @torch._dynamo.register_backend
    def vidup_counting_backend(graph, example_inputs):
        compiled.append(graph)
        return graph.forward

    torch._dynamo.reset()
    config = flux_config(
        tiny_flux,
        **{
            "flux.turbo_lora": str(tiny_flux["turbo"]),
            "flux.turbo_steps": 4,
            "flux.loras": [str(tiny_flux["lora"])],
            "flux.compile": True,
            "flux.compile_backend": "vidup_counting_backend",
            "temporal.flux.keyframe_interval": 2,
        },
    )
    up = upscaler(config)
    kinds, graphs = [], []
    for frame in PAN:
        up.upscale_frame(frame)
        kinds.append(up.engine.stats.last_frame["kind"])
        graphs.append(len(compiled))
    assert kinds == ["keyframe", "propagated"] * 3
    assert graphs[1] > 0 and graphs[-1] == graphs[1]  # both kinds compiled once; switching back and forth is free


# --- validation and weights -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        {"flux.stage2_strength": 0.0},
        {"flux.strength": 0.0},
        {"temporal.flux.strength": 0.0},
        {"temporal.flux.stage2_strength": 0.0},
    ],
)
def test_settings_that_would_run_no_step_are_refused_before_loading(setting):
    with pytest.raises(ConfigError, match="leaves no denoising step"):
        load_config(overrides={"engine": "flux", **setting})


def test_downloads_fetch_only_the_diffusers_folders(tiny_flux, monkeypatch, tmp_path):
    import fnmatch

    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def fake(repo, **kwargs):
        calls.append((repo, kwargs))
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    with pytest.raises(ModelNotFoundError):
        FluxEngine(
            flux_config(tiny_flux, **{"flux.model": "black-forest-labs/FLUX.1-dev", "flux.allow_download": True})
        )
    ((repo, kwargs),) = calls
    patterns = kwargs["allow_patterns"]
    wanted = [
        "model_index.json",
        "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
        "text_encoder_2/model-00001-of-00002.safetensors",
        "tokenizer_2/spiece.model",
        "vae/config.json",
    ]
    unwanted = ["flux1-dev.safetensors", "ae.safetensors", "dev_grid.jpg"]
    assert all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in wanted)
    assert not any(fnmatch.fnmatch(f, p) for f in unwanted for p in patterns)
    assert kwargs["local_files_only"] is False


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
    assert '--include "transformer/*"' in message and "--allow-download" in message


# --- end to end ---------------------------------------------------------------------------------------------


def test_sr_init_uses_the_sr_engine(tiny_flux):
    engine = FluxEngine(flux_config(tiny_flux, **{"flux.init": "sr"}))
    init = engine.upscale(FRAME, (64, 48)).stages()[0]
    assert init.name == "stage 0: sr" and not np.array_equal(init.image, resize_rgb(FRAME, 64, 48))


def test_prompt_is_encoded_once_per_clip(tiny_flux, tmp_path):
    from vidup.api import upscale_video

    engine = FluxEngine(flux_config(tiny_flux))
    calls = []
    engine.components.text_encoder_2.register_forward_hook(lambda *a: calls.append(1))
    clip = make_clip(tmp_path / "in.mp4", frames=3, size=(40, 30))
    upscale_video(clip, tmp_path / "out.mp4", flux_config(tiny_flux), engine=engine)
    assert len(calls) == 1 and engine.stats.prompt_encodings == 1


def test_cli_end_to_end_on_a_ten_frame_clip_with_audio(tiny_flux, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=10, size=(40, 30))
    out = tmp_path / "out.mp4"
    result = flux_cli(
        tiny_flux, clip, out, "--steps", "2", "--stage2-steps", "2", "--size", "64", "--prompt", "", "--seed", "3", "-q"
    )
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
    assert frame_times(out) == frame_times(clip)
    assert packets(out, "audio") == packets(clip, "audio")


def test_paper_preset_is_the_published_pipeline():
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "paper.toml")
    f = config.flux
    assert config.engine == "flux" and config.size == "1024" and f.init == "lanczos" and f.control_image == "stage1"
    assert f.strength == 0.75 and f.conditioning_scale == 0.6 and f.steps == 28 and f.offload == "auto"


def test_targets_that_are_not_multiples_of_16_are_worked_at_the_next_multiple(tiny_flux):
    up = upscaler(flux_config(tiny_flux, size="70"))  # 40x30 -> 70x52: FLUX works at 80x64
    outs = [up.upscale_frame(frame) for frame in PAN[:2]]
    assert [o.shape for o in outs] == [(52, 70, 3), (52, 70, 3)]
    assert up.engine.stats.last_frame["kind"] == "propagated"
    assert up.last.stages()[1].image.shape == (64, 80, 3)  # stage images at the working size
