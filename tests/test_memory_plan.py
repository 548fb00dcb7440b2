"""The FLUX memory plan with modules already on the device, and without sequential offload (validation while a
LoRA trains). CPU only: the plan never touches the device, and a torch.device("cuda") needs no GPU."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vidup import load_config
from vidup.train import trainer
from vidup.engines.flux.memory import GIB, Placer, choose_memory_plan, on_device, working_bytes
from vidup.train.trainer import Validator, validation_plan

# FLUX.1-dev in bf16: the bytes test_flux_engine's full_size fixture measures from the real configs.
FULL = {
    "transformer": 23_802_816_640,
    "controlnet": 3_583_210_496,
    "vae": 167_639_366,
    "text_encoder": 246_121_576,
    "text_encoder_2": 9_524_621_312,
}
CUDA = torch.device("cuda")
WORKING = working_bytes(1024, 1024, 4.0)
TRAINED = {"transformer"}
MARGINS = {"flux.reserve_gib": 2.0, "flux.working_gib_per_mpix": 4.0}  # as in plan() below


def plan(free_gib, requested="auto", **kwargs):
    return choose_memory_plan(requested, CUDA, FULL, WORKING, int(free_gib * GIB), 2 * GIB, **kwargs)


class Fake(nn.Module):
    """A module that only records where it is: the Placer's moves run without a GPU."""

    def __init__(self, where="cpu"):
        super().__init__()
        self.where = torch.device(where)

    def to(self, device, *args, **kwargs):
        self.where = torch.device(device)
        return self

    def parameters(self, recurse=True):
        yield SimpleNamespace(device=self.where)


def test_the_issue_case_streamed_the_trained_transformer_before():
    """The inputs below are the bug's: counting the resident 22 GiB transformer against free memory streams it."""
    assert plan(10).offload == "sequential" and plan(24).offload == "sequential"


@pytest.mark.parametrize("requested", ["auto", "sequential"])
@pytest.mark.parametrize("free_gib", [0, 4, 10, 16, 20, 24, 30, 40, 60, 80, 139])
def test_without_sequential_the_plan_never_streams(free_gib, requested):
    chosen = plan(free_gib, requested, resident=TRAINED, allow_sequential=False)
    assert chosen.offload in ("none", "model"), chosen.reason


def test_resident_modules_count_as_present_not_against_free_memory():
    # 20 GiB free beside the resident transformer: all of FLUX (39 GiB with activations) fits in 40 GiB.
    assert plan(20, resident=TRAINED).offload == "none"
    assert plan(14, resident=TRAINED).offload == "model"
    # At 10 GiB the denoising set fits (29.9 of 30.2 GiB), but T5 beside the resident transformer (31.3) does not:
    # the prompt phase counts the resident modules that stay for it.
    assert plan(10, resident=TRAINED).offload == "sequential"


def test_when_nothing_fits_without_streaming_it_is_model_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="vidup.engines.flux.memory"):
        chosen = plan(10, resident=TRAINED, allow_sequential=False)
    assert chosen.offload == "model" and "may run out of memory" in chosen.reason
    assert "may run out of memory" in caplog.text
    asked = plan(139, "sequential", resident=TRAINED, allow_sequential=False)
    assert asked.offload == "none" and "'sequential' is ruled out" in asked.reason
    assert plan(139, "model", allow_sequential=False).offload == "model"  # other requests still hold


def test_on_device_names_the_modules_whose_weights_are_there():
    modules = {"transformer": nn.Linear(2, 2), "vae": nn.Linear(2, 2, device="meta"), "text_encoder": Fake("cuda:1")}
    assert on_device(modules, torch.device("cpu")) == {"transformer"}
    assert on_device(modules, torch.device("meta")) == {"vae"}
    assert on_device(modules, CUDA) == on_device(modules, torch.device("cuda:1")) == {"text_encoder"}
    assert on_device(modules, torch.device("cuda:0")) == set()


@pytest.mark.parametrize("offload", ["auto", "sequential"])
@pytest.mark.parametrize("free_gib", [4, 10, 20, 30])
def test_the_validators_plan_never_streams_the_resident_transformer(free_gib, offload):
    flux = load_config(overrides={"flux.offload": offload, **MARGINS}).flux
    chosen = validation_plan(flux, CUDA, FULL, TRAINED, (1024, 1024), free_gib * GIB)
    assert chosen.offload in ("none", "model"), chosen.reason
    assert (chosen.offload == "none") == (free_gib >= 20)  # the resident transformer is counted as there


def test_the_validator_plans_from_the_device_and_never_moves_the_transformer_to_the_host(monkeypatch):
    """Validation as train_lora runs it on a (fake) GPU: the transformer on the device, the rest released to the
    host; two validations with the validator's own planning and release, as engine.prepare places."""
    modules = {name: Fake() for name in FULL}
    modules["transformer"].to("cuda:0")
    components = SimpleNamespace(modules=lambda: modules, sizes=lambda: FULL)
    validator = Validator.__new__(Validator)  # its FluxEngine would load weights; only placement is under test
    validator.held_out = [("a", np.zeros((768, 1344, 3), np.uint8)), ("b", np.zeros((1024, 1024, 3), np.uint8))]
    validator.engine = SimpleNamespace(
        placement=SimpleNamespace(device=CUDA),
        flux=load_config(overrides=MARGINS).flux,
        components=components,
        placer=None,
    )
    monkeypatch.setattr(trainer, "free_device_memory", lambda device: 20 * GIB)
    chosen = validator.memory_plan()
    assert chosen.offload == "none", chosen.reason  # without counting the resident transformer: not even model
    placer = validator.engine.placer = Placer(modules, chosen, CUDA)
    for _ in range(2):
        placer.prompt_phase()
        placer.denoise_phase()
        validator._back_to_training()
    assert ("transformer", "host") not in placer.moves and not placer.streamed
    assert modules["transformer"].where.type == "cuda"
    assert {n for n, where in placer.location.items() if where == "device"} == {"transformer"}
