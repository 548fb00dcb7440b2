"""tools/gpu_check.py and tools/gpu_kit.py on the CPU: the tiny run measures every section, a failing section is
recorded while the others still run, the budget skips what is left; the kit's size limit, pins, install path and
its copy of the default SR model (found through VIDUP_SR_MODELS)."""

import importlib
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.gpu  # the GPU check itself, run at tiny sizes on the CPU

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import gpu_check  # noqa: E402
import gpu_kit  # noqa: E402


def run_check(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--tiny", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )


def read(out: Path) -> tuple[dict, str]:
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    result = run_check(out)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return read(out)


@pytest.mark.slow
def test_the_tiny_run_measures_every_section(tiny_run):
    data, md = tiny_run
    assert list(data["sections"]) == list(gpu_check.SECTIONS)
    for name, section in data["sections"].items():
        assert section["status"] == "ok" and not section["errors"] and not section["skipped"], (name, section)
        assert section["figures"], name
        assert f"## {name}: ok" in md
        for figure in section["figures"]:
            value = figure["value"]
            assert isinstance(value, float) and math.isfinite(value) and value >= 0, figure
            assert figure["unit"], figure
            assert f"| {figure['name']} | {gpu_check.fmt(value)} | {figure['unit']} |" in md
    assert data["meta"]["device"].startswith("CPU") and data["meta"]["torch"] and data["meta"]["seconds"] > 0


def test_the_tiny_run_covers_every_flux_variant_and_the_tiled_size(tiny_run):
    data, _ = tiny_run
    figures = {f["name"]: f["value"] for f in data["sections"]["flux"]["figures"]}
    for variant, size in gpu_check.TINY_FLUX_JOBS:
        assert figures[f"{size} {variant}: keyframe"] > 0 and figures[f"{size} {variant}: propagated frame"] > 0
    assert {name: v for name, v in figures.items() if "tiles" in name} == {"192x144 plain: tiles per step": 4.0}
    assert {name for name in figures if "reused" in name} == {
        "64x48 cache: steps reused by the cache",
        "64x48 compile+cache: steps reused by the cache",
    }
    train = {f["name"] for f in data["sections"]["train"]["figures"]}
    assert {"gradient checkpointing on: step", "gradient checkpointing off: step"} <= train


@pytest.mark.slow
def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path):
    result = run_check(tmp_path, "--sections", "history_blend", "train", "--fail", "history_blend")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    data, md = read(tmp_path)
    blend, train = data["sections"]["history_blend"], data["sections"]["train"]
    assert blend["status"] == "error" and "injected failure" in blend["error"] and not blend["figures"]
    assert train["status"] == "ok" and train["figures"]
    assert "## history_blend: error" in md and "**section failed**: RuntimeError: injected failure" in md
    assert "## train: ok" in md and set(data["sections"]) == {"history_blend", "train"}


def test_past_the_budget_what_is_left_is_skipped(tmp_path):
    result = run_check(tmp_path, "--budget", "0", "--sections", "history_blend", "train")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data, md = read(tmp_path)
    for name in ("history_blend", "train"):
        section = data["sections"][name]
        assert section["status"] == "skipped" and not section["figures"]
        assert "not enough budget left" in section["skipped"][0]
        assert f"## {name}: skipped" in md
    assert md.count("- skipped: not enough budget left") == 2


def test_flux_estimates_count_every_tile():
    flux = SimpleNamespace(max_megapixels=2.1, tile_size=1024, tile_overlap=256)
    assert gpu_check.effective_megapixels("1920x1088", flux) == pytest.approx(1920 * 1088 / 1e6)  # whole
    assert gpu_check.effective_megapixels("1024x576", flux) == pytest.approx(1024 * 576 / 1e6)
    assert gpu_check.effective_megapixels("3840x2160", flux) == pytest.approx(5 * 3 * 1024 * 1024 / 1e6)  # 15 tiles


def test_the_kit_size_check(tmp_path):
    (tmp_path / "wheels").mkdir()
    for name, size in (("wheels/a.whl", 40 * 2**20), ("models.bin", 20 * 2**20)):
        with open(tmp_path / name, "wb") as f:
            f.truncate(size)  # sparse: the size without writing it
    files, total = gpu_kit.measure(tmp_path)
    assert files == {"models.bin": 20 * 2**20, "wheels/a.whl": 40 * 2**20} and total == 60 * 2**20
    gpu_kit.check_size(total)  # exactly the limit travels
    (tmp_path / "MANIFEST.json").write_text("x")
    files, total = gpu_kit.measure(tmp_path)
    with pytest.raises(ValueError, match="60.0 MiB, over the 60 MiB"):
        gpu_kit.check_size(total)


def test_the_kit_pins_come_from_the_constraints_else_from_here(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# pins\ndiffusers==1.2.3  # why\nav==4.5\n")
    assert gpu_kit.pins(("diffusers", "av", "kornia_rs"), constraints) == [
        "diffusers==1.2.3",
        "av==4.5",
        f"kornia_rs=={importlib.metadata.version('kornia_rs')}",
    ]


def probe_wheel(folder: Path) -> Path:
    """A pure-Python wheel of one module, vidup_kit_probe, made here (no index needed)."""
    folder.mkdir(parents=True)
    path = folder / "vidup_kit_probe-1.0-py3-none-any.whl"
    info = "vidup_kit_probe-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("vidup_kit_probe/__init__.py", "VALUE = 42\n")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: vidup-kit-probe\nVersion: 1.0\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


def test_the_kit_wheels_are_installed_where_modules_are_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.delitem(sys.modules, "vidup_kit_probe", raising=False)
    kit = tmp_path / "kit"
    probe_wheel(kit / "wheels")
    assert gpu_check.use_kit(kit, ("vidup_kit_probe", "json")) == ["vidup_kit_probe"]
    try:
        assert importlib.import_module("vidup_kit_probe").VALUE == 42
    finally:
        sys.modules.pop("vidup_kit_probe", None)
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(kit / "site")  # child processes see it too
    assert gpu_check.use_kit(kit, ("vidup_kit_probe",)) == []  # now importable: nothing to do
    with pytest.raises(SystemExit, match="make gpu-kit"):
        gpu_check.use_kit(tmp_path / "empty", ("vidup_kit_absent",))


def test_the_kit_carries_the_default_model_where_vidup_finds_it(tmp_path, monkeypatch):
    from vidup.engines.weights import BUNDLED_MODELS, DEFAULT_MODEL, bundled_model_files, load_sr_model

    model = BUNDLED_MODELS[DEFAULT_MODEL]
    monkeypatch.delenv("VIDUP_SR_MODELS", raising=False)
    installed = bundled_model_files(model)
    copies = gpu_kit.copy_models(tmp_path / "models")
    assert [p.read_bytes() for p in copies] == [p.read_bytes() for p in installed]
    monkeypatch.setenv("VIDUP_SR_MODELS", str(tmp_path / "models"))
    assert list(bundled_model_files(model)) == copies  # the copies, not the package's files
    assert load_sr_model(DEFAULT_MODEL)[2] == DEFAULT_MODEL
