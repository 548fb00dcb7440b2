"""Where FLUX weights come from: a local diffusers folder, or a repo already in the Hugging Face cache.

Nothing is downloaded unless the user passes --allow-download; a missing component is a `ModelNotFoundError`
that names the component, where vidup looked, and the command that fetches it. Resolution never touches the
network without that flag, so it cannot hang.
"""

from __future__ import annotations

import re
from pathlib import Path

from vidup.config import parse_lora_spec
from vidup.errors import ModelNotFoundError

BASE_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
CONTROLNET_PARTS = ("config.json",)
# What a download fetches: only the diffusers folders vidup loads. FLUX.1-dev's repo also holds a 24 GB single-file
# checkpoint (flux1-dev.safetensors) and the autoencoder again (ae.safetensors) that vidup never reads.
BASE_PATTERNS = ["model_index.json"] + [f"{part}/*" for part in BASE_PARTS]
CONTROLNET_PATTERNS = ["config.json", "*.safetensors"]
LORA_PATTERNS = ["*.safetensors"]
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

# FLUX weights vidup is built for, with their licences. None ships with vidup; a user fetches them.
NON_COMMERCIAL = (
    "FLUX.1 [dev] Non-Commercial License: research and personal use only; a broadcaster needs Black "
    "Forest Labs' commercial licence"
)
FLUX_WEIGHTS = {
    "black-forest-labs/FLUX.1-dev": ("base model (default, --flux-model)", NON_COMMERCIAL),
    "jasperai/Flux.1-dev-Controlnet-Upscaler": (
        "ControlNet upscaler (default, --controlnet)",
        NON_COMMERCIAL + " (a FLUX.1-dev derivative)",
    ),
    "alimama-creative/FLUX.1-Turbo-Alpha": (
        "turbo LoRA for propagated frames (--turbo-lora)",
        NON_COMMERCIAL + " (a FLUX.1-dev derivative)",
    ),
    "black-forest-labs/FLUX.1-schnell": ("base model, guidance-free, few steps (--flux-model)", "Apache-2.0"),
}


def _cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _fetch_hint(repo_id: str, component: str, patterns: list[str] | None) -> str:
    gated = (
        " (FLUX.1-dev is gated: accept its licence on the Hub and run `hf auth login` first)"
        if "FLUX.1-dev" in repo_id
        else ""
    )
    include = "".join(f' --include "{p}"' for p in patterns or ())
    return (
        f"fetch it with `hf download {repo_id}{include} --local-dir models/{repo_id.split('/')[-1]}` and pass that "
        f"folder as {component}, or rerun with --allow-download{gated}"
    )


def _check_parts(folder: Path, parts: tuple[str, ...], component: str, flag: str) -> Path:
    missing = [part for part in parts if not (folder / part).exists()]
    if missing:
        raise ModelNotFoundError(
            f"{component}: {folder} is missing {', '.join(missing)}; {flag} needs a complete diffusers folder "
            f"(the layout `hf download` or `save_pretrained` writes)"
        )
    weights = list(folder.rglob("*.safetensors")) + list(folder.rglob("*.bin"))
    if not weights:
        raise ModelNotFoundError(f"{component}: {folder} holds no weight files (*.safetensors)")
    return folder


def resolve_model_dir(
    spec: str,
    component: str,
    flag: str,
    parts: tuple[str, ...],
    allow_download: bool,
    patterns: list[str] | None = None,
) -> Path:
    """A local folder for `spec` (a path or a Hub repo id), checked for the files `component` needs. A download
    (only with `allow_download`) fetches just `patterns`."""
    path = Path(spec).expanduser()
    if path.exists():
        return _check_parts(path, parts, component, flag)
    if not _REPO_ID.match(spec) or spec.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"{component}: no such folder: {path} (given as {flag})")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(spec, local_files_only=not allow_download, allow_patterns=patterns)
    except LocalEntryNotFoundError:
        raise ModelNotFoundError(
            f"{component} '{spec}' is not a local folder and not in the Hugging Face cache ({_cache_dir()}); "
            + _fetch_hint(spec, flag, patterns)
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelNotFoundError(f"{component} '{spec}' could not be downloaded: {exc}") from None
    return _check_parts(Path(folder), parts, component, flag)


def resolve_base(flux) -> Path:
    """The FLUX base model folder `flux.model` names (`--flux-model`), checked for every component."""
    return resolve_model_dir(
        flux.model, "FLUX base model", "--flux-model", BASE_PARTS, flux.allow_download, BASE_PATTERNS
    )


def resolve_controlnet(flux) -> Path:
    """The FLUX ControlNet upscaler folder `flux.controlnet` names (`--controlnet`)."""
    return resolve_model_dir(
        flux.controlnet,
        "FLUX ControlNet upscaler",
        "--controlnet",
        CONTROLNET_PARTS,
        flux.allow_download,
        CONTROLNET_PATTERNS,
    )


def resolve_lora(spec: str, allow_download: bool) -> tuple[Path, float]:
    path_text, scale = parse_lora_spec(spec)
    path = Path(path_text).expanduser()
    if path.is_file():
        return path, scale
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ModelNotFoundError(f"LoRA: {path} holds no .safetensors file")
        return files[0], scale
    folder = resolve_model_dir(path_text, "LoRA", "--lora", (), allow_download, LORA_PATTERNS)
    return resolve_lora(str(folder), allow_download)[0], scale
