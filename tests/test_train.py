"""`vidup train-lora` on the tiny random FLUX checkpoint, on the CPU."""

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vidup import load_config
from vidup.config import ShotConfig
from vidup.errors import CheckpointError, ConfigError, TrainingDataError
from vidup.train import data as train_data
from vidup.train import trainer
from vidup.train.trainer import latest_checkpoint, train_lora, work_folder

from media import pattern


def train_config(tiny_flux, **overrides):
    values = {
        "flux.model": str(tiny_flux["base"]),
        "flux.controlnet": str(tiny_flux["controlnet"]),
        "flux.steps": 4,
        "flux.stage2_steps": 4,
        "flux.stage2_strength": 0.5,
        "quiet": True,
        "train.resolution": 64,
        "train.rank": 4,
        "train.alpha": 4,
        "train.steps": 4,
        "train.lr": 1e-3,
        "train.validate_every": 0,
        "train.checkpoint_every": 100,
    }
    values.update(overrides)
    return load_config(overrides=values)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def image_folder(folder: Path, count: int = 1, size=(96, 64)) -> Path:
    for i in range(count):
        write_image(folder / f"frame{i}.png", pattern(i * 7, *size))
    return folder


# --- data ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_each_data_problem_is_one_line_before_any_model_loads(tmp_path):
    def run(*args):
        # A base model that does not exist: the data errors must come first, and nothing may load.
        return subprocess.run(
            [sys.executable, "-m", "vidup", "train-lora", *map(str, args), "--flux-model", str(tmp_path / "no-model")],
            capture_output=True,
            text=True,
        )

    cases = []
    cases.append((run(tmp_path / "missing", tmp_path / "a.safetensors"), "does not exist"))
    (tmp_path / "empty").mkdir()
    cases.append((run(tmp_path / "empty", tmp_path / "a.safetensors"), "holds no images"))
    broken = image_folder(tmp_path / "broken")
    (broken / "bad.jpg").write_bytes(b"not a jpeg")
    cases.append((run(broken, tmp_path / "a.safetensors"), "1 images cannot be read: bad.jpg"))
    orphan = image_folder(tmp_path / "orphan")
    (orphan / "lonely.txt").write_text("a caption")
    cases.append((run(orphan, tmp_path / "a.safetensors"), "have no image or clip beside them: lonely.txt"))
    good = image_folder(tmp_path / "good")
    cases.append((run(good, tmp_path / "a.safetensors", "--resolution", "1000"), "multiple of 16"))
    cases.append((run(good, tmp_path / "a.safetensors"), "FLUX base model"))  # only then: the missing model
    for proc, expected in cases:
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_resume_checkpoint_of_another_rank_or_model_is_refused_before_loading(tmp_path, tiny_flux):
    data = image_folder(tmp_path / "data", 2)
    out = tmp_path / "lora.safetensors"
    train_lora(data, out, train_config(tiny_flux, **{"train.steps": 2, "train.checkpoint_every": 2}))
    checkpoint = latest_checkpoint(out)
    assert checkpoint.name == "step-000002"
    with pytest.raises(CheckpointError, match="rank 4"):
        train_lora(data, out, train_config(tiny_flux, **{"train.rank": 8}), resume=checkpoint, components="unused")
    other = tmp_path / "other-base"
    shutil.copytree(tiny_flux["base"], other)
    with pytest.raises(CheckpointError, match="base_model"):
        train_lora(
            data, out, train_config(tiny_flux, **{"flux.model": str(other)}), resume=checkpoint, components="unused"
        )


def test_captions_are_read_and_missing_ones_fall_back_to_the_default(tmp_path):
    folder = image_folder(tmp_path, 2)
    (tmp_path / "frame0.txt").write_text("striker in a red kit, number 9\n")
    config = load_config().train
    dataset = train_data.scan(folder, config)
    assert {s.path.name: s.caption for s in dataset.stills} == {
        "frame0.png": "striker in a red kit, number 9",
        "frame1.png": config.default_caption,
    }


@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (1440, 1080), (2560, 1080), (2000, 2000)])
def test_buckets_keep_the_aspect_ratio_and_train_the_whole_frame(size):
    w, h = size
    bw, bh = train_data.bucket_for(w, h, 1024)
    assert bw % 16 == 0 and bh % 16 == 0 and 0.9 * 1024**2 <= bw * bh <= 1024**2
    assert abs(np.log((bw / bh) / (w / h))) < 0.03  # within 3% of the frame's own aspect
    image = np.zeros((h, w, 3), np.uint8)
    fitted = train_data.fit_to_bucket(image, 1024, "refuse", "frame")
    assert fitted.shape == (bh, bw, 3)


def test_clip_frames_follow_the_configured_shot_detection(sample):
    """Training cuts clips as the upscale does: a threshold no cut reaches leaves the sample one shot."""
    config = load_config(overrides={"train.frames_per_shot": 3, "temporal.shots.threshold": 200.0})
    picked = train_data.pick_clip_frames(sample, config.train, config.temporal.shots)
    assert len(picked) <= 3  # frames_per_shot of one shot
    default = train_data.pick_clip_frames(sample, config.train, ShotConfig())
    assert any(i < 60 for i in default) and any(i >= 60 for i in default) and len(default) > 3


def test_small_images_are_refused_or_upsampled_with_a_warning(caplog):
    small = np.zeros((270, 480, 3), np.uint8)
    with pytest.raises(TrainingDataError, match="smaller than its"):
        train_data.fit_to_bucket(small, 1024, "refuse", "tiny.png")
    with caplog.at_level("WARNING"):
        assert (
            train_data.fit_to_bucket(small, 1024, "upsample", "tiny.png").shape[:2]
            == train_data.bucket_for(480, 270, 1024)[::-1]
        )
    assert "upsampled" in caplog.text


def test_a_clip_yields_frames_from_every_shot_without_near_duplicates(sample, tmp_path):
    config = load_config(overrides={"train.frames_per_shot": 3}).train
    picked = train_data.pick_clip_frames(sample, config, ShotConfig())  # the sample's shots: frames 0-59 and 60-99
    assert any(i < 60 for i in picked) and any(i >= 60 for i in picked) and len(picked) <= 6
    capped = train_data.pick_clip_frames(sample, load_config(overrides={"train.clip_frames": 2}).train, ShotConfig())
    assert len(capped) == 2 and capped[0] < 60 <= capped[1]  # a cap still covers every shot first
    import av

    still = tmp_path / "still.mp4"  # one shot of an unchanging picture: its frames are near-duplicates
    with av.open(str(still), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(pattern(0, 64, 48), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert len(train_data.pick_clip_frames(still, config, ShotConfig())) == 1
    items = train_data.sources(train_data.scan(tmp_path, config), config, ShotConfig())
    assert [i.name for i in items] == ["still.mp4#15"]


# --- training -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_loss_falls_on_a_memorised_image(tmp_path, tiny_flux):
    data = image_folder(tmp_path / "data", 1, size=(64, 64))
    report = train_lora(
        data, tmp_path / "lora.safetensors", train_config(tiny_flux, **{"train.steps": 40, "train.lr": 1e-2})
    )
    # At fixed noise and timesteps (the training curve itself is noisy by design).
    # (The tiny random model's LoRA has little capacity: 1.37 -> 1.13 here; deterministic, so it cannot flake.)
    assert report.fixed_loss_after < 0.9 * report.fixed_loss_before, (report.fixed_loss_before, report.fixed_loss_after)
    assert np.mean(report.losses[-10:]) < np.mean(report.losses[:10])
    assert report.vae_encodes == 1 and report.released == ("text_encoder", "text_encoder_2", "vae", "controlnet")
    # The cache is reused: a second run encodes nothing.
    again = train_lora(data, tmp_path / "again.safetensors", train_config(tiny_flux, **{"train.steps": 1}))
    assert again.vae_encodes == 1  # another output name: its own cache
    shutil.copytree(
        work_folder(tmp_path / "lora.safetensors") / "cache", work_folder(tmp_path / "third.safetensors") / "cache"
    )
    third = train_lora(data, tmp_path / "third.safetensors", train_config(tiny_flux, **{"train.steps": 1}))
    assert third.vae_encodes == 0


def test_the_saved_lora_loads_with_lora_and_changes_the_output_and_not_at_scale_0(tmp_path, tiny_flux):
    from vidup.engines.flux.engine import FluxEngine

    data = image_folder(tmp_path / "data", 2)
    out = tmp_path / "football.safetensors"
    train_lora(data, out, train_config(tiny_flux, **{"train.steps": 3, "train.lr": 5e-3}))
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["vidup.rank"] == "4" and meta["vidup.alpha"] == "4.0" and meta["vidup.steps"] == "3"
    assert meta["vidup.base_model"] == "base" and "2 images" in meta["vidup.data"]
    assert all(k.startswith("transformer.") for k in keys) and any("add_q_proj.lora_A" in k for k in keys)

    frame = pattern(5, 40, 30)

    def upscale(*loras):
        config = train_config(tiny_flux, **{"size": "64", "flux.loras": list(loras)})
        engine = FluxEngine(config)
        engine.place((64, 48))
        return engine.upscale(frame, (64, 48)).image

    plain = upscale()
    assert not np.array_equal(upscale(f"{out}:0.8"), plain)
    assert np.array_equal(upscale(f"{out}:0"), plain)


def test_resume_continues_exactly(tmp_path, tiny_flux):
    data = image_folder(tmp_path / "data", 3)
    config = train_config(tiny_flux, **{"train.steps": 5, "train.checkpoint_every": 2})
    whole = train_lora(data, tmp_path / "whole.safetensors", config)
    out = tmp_path / "resumed.safetensors"
    stopped = train_lora(data, out, config, steps_this_run=3)  # interrupted after step 3 (checkpoint at 2)
    assert stopped.steps == 3 and not out.exists()
    resumed = train_lora(data, out, config, resume="latest")
    assert resumed.losses[:2] == whole.losses[:2]
    assert resumed.losses[2:] == whole.losses[2:]  # the steps after the checkpoint, exactly
    with safe_open(str(out), "pt") as a, safe_open(str(tmp_path / "whole.safetensors"), "pt") as b:
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def recorded_validators(monkeypatch) -> list:
    validators = []

    class Recording(trainer.Validator):
        def __init__(self, *args):
            super().__init__(*args)
            validators.append(self)

    monkeypatch.setattr(trainer, "Validator", Recording)
    return validators


def test_validation_sheets_and_the_loss_curve(tmp_path, tiny_flux, monkeypatch):
    validators = recorded_validators(monkeypatch)
    data = image_folder(tmp_path / "data", 3)
    report = train_lora(
        data,
        tmp_path / "lora.safetensors",
        train_config(tiny_flux, **{"train.steps": 2, "train.validate_every": 1, "train.validation_frames": 1}),
    )
    assert report.held_out == 1 and report.items == 2
    assert [p.name for p in report.validation_sheets] == ["step-000001.png", "step-000002.png"]
    sheet = cv2.imread(str(report.validation_sheets[0]))
    assert sheet is not None and sheet.shape[0] > 5 * 64  # input, Lanczos, engine stages, ground truth rows
    assert cv2.imread(str(work_folder(tmp_path / "lora.safetensors") / "loss.png")) is not None
    # The transformer under training never left the device; everything else did, after each sheet.
    placer = validators[0].engine.placer
    assert ("transformer", "host") not in placer.moves and not placer.streamed
    assert placer.moves.count(("controlnet", "host")) == 2
    assert {n for n, where in placer.location.items() if where == "device"} == {"transformer"}


def test_a_validation_out_of_memory_skips_the_sheets_and_training_goes_on(tmp_path, tiny_flux, monkeypatch, caplog):
    from vidup.engines.flux.engine import FluxEngine

    validators = recorded_validators(monkeypatch)
    calls = []

    def upscale(self, *args, **kwargs):
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(FluxEngine, "upscale", upscale)
    data = image_folder(tmp_path / "data", 3)
    with caplog.at_level("WARNING", logger="vidup"):
        report = train_lora(
            data,
            tmp_path / "lora.safetensors",
            train_config(tiny_flux, **{"train.steps": 3, "train.validate_every": 1, "train.validation_frames": 1}),
        )
    assert report.steps == 3 and (tmp_path / "lora.safetensors").is_file() and report.validation_sheets == []
    assert len(calls) == 1 and "validation at step 1 ran out of memory" in caplog.text  # then no more tries
    placer = validators[0].engine.placer
    assert {n for n, where in placer.location.items() if where == "device"} == {"transformer"}
    assert validators[0].engine.components.transformer.training


def test_a_kohya_format_flux_lora_loads_through_lora(tmp_path, tiny_flux):
    """KohyaSS (sd-scripts) names, with fused qkv, as users bring them; diffusers converts them on load."""
    from vidup.engines.flux.engine import FluxEngine

    config = train_config(tiny_flux, size="64")
    engine = FluxEngine(config)
    block = engine.components.transformer.transformer_blocks[0].attn
    inner, width = block.to_q.out_features, block.to_q.in_features
    generator = torch.Generator().manual_seed(0)
    state = {}
    for stream in ("img", "txt"):
        prefix = f"lora_unet_double_blocks_0_{stream}_attn"
        state[f"{prefix}_qkv.lora_down.weight"] = torch.randn(4, width, generator=generator)
        state[f"{prefix}_qkv.lora_up.weight"] = torch.randn(3 * inner, 4, generator=generator)
        state[f"{prefix}_qkv.alpha"] = torch.tensor(4.0)
        state[f"{prefix}_proj.lora_down.weight"] = torch.randn(4, inner, generator=generator)
        state[f"{prefix}_proj.lora_up.weight"] = torch.randn(width, 4, generator=generator)
        state[f"{prefix}_proj.alpha"] = torch.tensor(4.0)
    kohya = tmp_path / "kohya.safetensors"
    save_file(state, str(kohya))
    engine.place((64, 48))
    plain = engine.upscale(pattern(5, 40, 30), (64, 48)).image
    with_lora = FluxEngine(train_config(tiny_flux, size="64", **{"flux.loras": [f"{kohya}:1.0"]}))
    with_lora.place((64, 48))
    assert not np.array_equal(with_lora.upscale(pattern(5, 40, 30), (64, 48)).image, plain)


def test_train_lora_settings_are_checked(tiny_flux, tmp_path):
    with pytest.raises(ConfigError, match="multiple of 16"):
        train_config(tiny_flux, **{"train.resolution": 100})
    with pytest.raises(ConfigError, match=".safetensors"):
        train_lora(image_folder(tmp_path / "d"), tmp_path / "lora.pt", train_config(tiny_flux))
