"""The job folder and its manifest: what a rerun needs to resume, and what tells it that it must not.

The folder `.NAME.vidup/` sits beside the output `NAME`. It holds `manifest.json` (the input's fingerprint, the
config, vidup's version, the plan, and each finished segment with its SHA-256) and the finished segment files.
The manifest is replaced atomically after each segment, so a kill at any moment leaves a consistent folder. The
folder is removed once the output is in place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidup.version import __version__
from vidup.config import RUN_ONLY_SETTINGS, VidupConfig
from vidup.device import device_kind
from vidup.errors import OutputWriteError
from vidup.fsutil import os_error_text, write_atomically
from vidup.jobs.plan import Plan

MANIFEST = "manifest.json"
FORMAT = 1
SAMPLE_BYTES = 1 << 20  # the fingerprint hashes this much of the input's head and tail


def job_folder(output: Path) -> Path:
    return output.parent / f".{output.name}.vidup"


def lock_path(output: Path) -> Path:
    """The file whose OS lock a job holds for its life (beside the job folder, which a fresh start deletes)."""
    return output.parent / f".{output.name}.vidup.lock"


def fingerprint(path: Path) -> dict:
    """Size, modification time and a hash of the head and tail: cheap, and any edit or replacement shows."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLE_BYTES))
        if stat.st_size > SAMPLE_BYTES:
            f.seek(max(SAMPLE_BYTES, stat.st_size - SAMPLE_BYTES))
            digest.update(f.read(SAMPLE_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample_sha256": digest.hexdigest()}


def output_settings(config: VidupConfig) -> dict:
    """The settings that decide what this job's output holds, as settled on this machine (`settle`): left out are
    those that only change how the job runs, training's, and the engine not in use (the SR engine's stay for a
    FLUX job whose stage 0 is the SR engine)."""
    unused = {"train."} | ({"flux."} if config.engine != "flux" else set())
    if config.engine == "flux" and config.flux.init != "sr":
        unused.add("sr.")
    settings = {
        k: v for k, v in config.settings().items() if k not in RUN_ONLY_SETTINGS and not k.startswith(tuple(unused))
    }
    settings["device"] = device_kind(settings["device"])
    return settings


@dataclass
class DoneSegment:
    """A finished segment as the manifest records it."""

    file: str  # its name in the job folder
    frames: int
    sha256: str  # of the whole file, taken while it was written
    settled: dict = field(default_factory=dict)  # what every "auto" became where it ran (engines.base.settle)


@dataclass
class Manifest:
    input: dict
    settings: dict
    version: str
    plan: Plan
    done: dict[int, DoneSegment] = field(default_factory=dict)  # by segment index

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": self.version,
            "input": self.input,
            "settings": self.settings,
            "plan": self.plan.to_json(),
            "done": {str(k): asdict(v) for k, v in sorted(self.done.items())},
        }

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        return cls(
            data["input"],
            data["settings"],
            data["version"],
            Plan.from_json(data["plan"]),
            {int(k): DoneSegment(**v) for k, v in data["done"].items()},
        )


def why_not_resumable(old: Manifest, input_print: dict, settings: dict) -> str | None:
    """None when `old` belongs to this input and these settings; otherwise the reason, for the user."""
    if old.version != __version__:
        return f"it was made by vidup {old.version}, this is {__version__}"
    if old.input != input_print:
        return "the input file changed since"
    changed = sorted(k for k in set(old.settings) | set(settings) if old.settings.get(k) != settings.get(k))
    if changed:
        shown = ", ".join(f"{k} {old.settings.get(k)!r} -> {settings.get(k)!r}" for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return f"settings changed ({shown}{more})"
    return None


class JobFolder:
    def __init__(self, output: Path):
        self.path = job_folder(output)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def load(self) -> tuple[Manifest | None, str | None]:
        """The manifest left by an earlier run, or (None, why it cannot be read) when there is a folder."""
        if not self.manifest_path.exists():
            return None, ("its manifest is missing" if self.path.exists() else None)
        try:
            with open(self.manifest_path) as f:
                data = json.load(f)
            if data.get("format") != FORMAT:
                return None, "its manifest is of another format"
            return Manifest.from_json(data), None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, f"its manifest cannot be read ({exc.__class__.__name__})"

    def create(self) -> None:
        try:
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
        except OSError as exc:
            raise OutputWriteError(f"cannot create the job folder {self.path}: {os_error_text(exc)}") from None

    def save(self, manifest: Manifest) -> None:
        """Atomically: a kill leaves either the old manifest or the new one."""
        write_atomically(self.manifest_path, json.dumps(manifest.to_json(), indent=1).encode(), "the job manifest")

    def remove_strays(self, manifest: Manifest) -> None:
        """Files no finished segment names (temporary files of a killed run)."""
        keep = {MANIFEST} | {entry.file for entry in manifest.done.values()}
        for path in self.path.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
