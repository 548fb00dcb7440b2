"""A file job, in numbered stages: (1) check everything that can be checked, (2) resume from the job folder or
plan afresh (the pre-pass), (3) run the missing segments (in this process or on Ray), (4) assemble the segments'
packets and the source's other streams into the output, without re-encoding (`vidup.jobs.assemble`), (5) remove
the job folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from vidup.version import __version__
from vidup.config import VidupConfig
from vidup.engines.base import Engine, settle
from vidup.errors import ConfigError, EngineMemoryError, JobError, OutputWriteError, TruncatedInputError
from vidup.fsutil import FileLock
from vidup.jobs.manifest import (
    DoneSegment,
    JobFolder,
    Manifest,
    lock_path,
    fingerprint,
    output_settings,
    why_not_resumable,
)
from vidup.jobs.plan import Plan, make_plan, repairs_from
from vidup.jobs.assemble import assemble
from vidup.jobs.segments import file_digest
from vidup.jobs.ray_executor import import_ray, run_on_ray
from vidup.jobs.worker import JobSpec, SegmentResult, SegmentWorker
from vidup.progress import progress_bar
from vidup.report import RunReport, StageTimes
from vidup.video.clip import describe_clip
from vidup.video.timing import Position, nominal_rate
from vidup.video.reader import probe
from vidup.video.writer import VideoWriter, check_encoder, check_output_path


def check_scale_out(config: VidupConfig) -> None:
    if config.job.workers > 1 or config.job.ray_address:
        import_ray()


def _say(config: VidupConfig, message: str) -> None:
    if not config.quiet:
        print(f"vidup: {message}", file=sys.stderr, flush=True)


def _open_manifest(folder: JobFolder, input_print: dict, config: VidupConfig, notes: list[str]) -> Manifest | None:
    """The earlier run's manifest if this run may resume it; otherwise None, and the reason is said."""
    if config.job.fresh:
        if folder.path.exists():
            notes.append(f"--fresh: the job folder {folder.path.name} of an earlier run was discarded")
        return None
    manifest, unreadable = folder.load()
    if manifest is None:
        if unreadable:
            notes.append(f"starting afresh: the job folder {folder.path.name} cannot be resumed: {unreadable}")
        return None
    reason = why_not_resumable(manifest, input_print, output_settings(config))
    if reason:
        notes.append(f"starting afresh: the job folder {folder.path.name} cannot be resumed: {reason}")
        return None
    for index, entry in list(manifest.done.items()):
        path = folder.path / entry.file
        if not path.is_file() or file_digest(path) != entry.sha256:
            del manifest.done[index]
            notes.append(f"segment {index} in {folder.path.name} was missing or damaged; it runs again")
    folder.remove_strays(manifest)
    return manifest


def _one_settlement(manifest: Manifest, folder: JobFolder) -> dict:
    """What "auto" became, the same for every segment; segments computed otherwise (workers of a remote cluster
    with other devices) must not be joined into one stream."""
    kinds = {tuple(sorted(entry.settled.items())) for entry in manifest.done.values()}
    if len(kinds) > 1:
        shown = "; ".join(", ".join(f"{k}={v}" for k, v in kind) for kind in sorted(kinds))
        raise JobError(
            f"the segments in {folder.path} were computed with different settings ({shown}): set "
            "--device and --precision explicitly, then rerun with --fresh"
        )
    return dict(next(iter(kinds), ()))


def _window(plan: Plan, info, start: Position | None, end: Position | None, rate: float):
    """(start, end) seconds of the input's clock that the output covers (copied streams are cut to it); its
    start is the output's time zero. None: the whole clip on its own clock."""
    origin = info.start_time if info.start_time < 0 else None  # a wrapped clock: no frame may sit before zero
    if start is None and end is None and origin is None:
        return None
    first = (plan.first_time if plan.first_time is not None else info.start_time) if start is not None else origin
    last = plan.last_time + 1.0 / rate if end is not None and plan.last_time is not None else None
    return first, last


def run_job(
    input_path: str | Path,
    output_path: str | Path,
    config: VidupConfig,
    engine: Engine | None = None,
    engine_factory: Callable[[VidupConfig], Engine] | None = None,
):
    # 1. Checks, before any decoding or model loading. Every "auto" is settled here, on this machine, except on a
    #    Ray cluster elsewhere, whose workers settle it on theirs (each segment records what it ran with).
    config = config.validate()
    if not config.job.ray_address:
        config = settle(config)
    input_path, output_path = Path(input_path), Path(output_path)
    check_output_path(output_path, input_path if input_path.exists() else None, config.overwrite)
    check_encoder(config.output.codec)
    check_scale_out(config)
    info = probe(input_path)
    if info.truncated and config.on_decode_error != "skip":
        raise TruncatedInputError(
            f"{input_path}: truncated: {info.truncated}. Pass --on-decode-error skip to upscale what is there"
        )
    description = describe_clip(info, config, config.output.codec)
    start, end = Position.parse(config.start), Position.parse(config.end)
    rate = float(nominal_rate(description.frame_rate))
    # The output container must take the video and every copied stream: try its header now, not hours later.
    trial = VideoWriter(output_path, description, config.output, source=info, overwrite=config.overwrite)
    trial.abort()
    started = time.perf_counter()
    times = StageTimes()

    # 2. Resume, or plan afresh, holding the job's lock: a second run on the same output stops here, before any
    #    model loads, and a killed run's lock is taken over.
    with FileLock(lock_path(output_path), str(output_path)):
        folder = JobFolder(output_path)
        notes: list[str] = list(trial.notes)  # stale temporary files it removed
        input_print = fingerprint(input_path)
        manifest = _open_manifest(folder, input_print, config, notes)
        resumed = 0
        if manifest is None:
            plan = make_plan(info, description, config, start, end)
            times.plan = plan.seconds
            if plan.frames == 0:
                raise ConfigError(
                    f"the selected range of {input_path} holds no frames (start={config.start}, end={config.end})"
                )
            folder.create()
            manifest = Manifest(input_print, output_settings(config), __version__, plan)
            folder.save(manifest)
        else:
            resumed = len(manifest.done)
            _say(config, f"resuming: {resumed} of {len(manifest.plan.segments)} segments done")
        plan = manifest.plan
        repairs = repairs_from(plan)
        if info.truncated:
            repairs.incomplete = info.truncated
        if info.start_time < 0:
            repairs.shifted_start = -info.start_time
        window = _window(plan, info, start, end, rate)
        spec = JobSpec(input_path, info, description, config, output_path.suffix, (window[0] or 0.0) if window else 0.0)

        # 3. The missing segments.
        todo = [s for s in plan.segments if s.index not in manifest.done]
        warnings: list[str] = []
        results: list[SegmentResult] = []
        ray_startup = None
        done_frames = sum(entry.frames for entry in manifest.done.values())
        with progress_bar(plan.frames, config.quiet, input_path.name) as bar:
            bar.update(done_frames)

            def finished(result: SegmentResult) -> None:
                manifest.done[result.segment.index] = DoneSegment(
                    result.file.path.name, result.file.frames, result.file.sha256, result.settled
                )
                folder.save(manifest)
                results.append(result)
                warnings.extend(result.warnings)

            try:
                if todo and (config.job.workers > 1 or config.job.ray_address):
                    ray_startup = run_on_ray(spec, todo, folder.path, engine_factory, bar.update, finished)
                elif todo:
                    worker = SegmentWorker(config, engine, engine_factory)  # the model loads only after every check
                    for segment in todo:
                        finished(worker.run(spec, segment, folder.path, on_frame=lambda: bar.update(1)))
            except (OutputWriteError, EngineMemoryError) as exc:
                raise type(exc)(
                    f"{exc}; {len(manifest.done)} of {len(plan.segments)} segments are done and kept in "
                    f"{folder.path}: rerun the same command to resume"
                ) from None
        for result in results:
            for name in ("decode", "analysis", "engine", "encode"):
                setattr(times, name, getattr(times, name) + getattr(result.times, name))
        settled = _one_settlement(manifest, folder)

        # 4. Assembly: the segments' packets in order, the other streams copied once.
        t0 = time.perf_counter()
        writer = VideoWriter(
            output_path,
            description,
            config.output,
            source=info,
            window=window,
            overwrite=config.overwrite,
            repairs=repairs,
            timecode_offset=0.0 if start is None else start.seconds_at(rate),
        )
        with writer:
            assemble(folder.path, plan, writer)
        times.assemble = time.perf_counter() - t0

        # 5. Done: the job folder goes.
        folder.remove()
        run_notes = dict.fromkeys((*description.notes, *notes, *writer.notes, *(n for r in results for n in r.notes)))
        return RunReport(
            output=output_path,
            frames=plan.frames,
            seconds=time.perf_counter() - started,
            size=description.size,
            packets_copied=writer.packets_copied,
            times=times,
            repairs=repairs,
            notes=tuple(run_notes),
            description=description,
            warnings=tuple(dict.fromkeys(warnings)),
            segments=len(plan.segments),
            segments_run=len(results),
            segments_resumed=resumed,
            ray_startup=ray_startup,
            settled=settled,
        )
