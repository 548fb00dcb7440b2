"""Scale-out on Ray (the optional extra `vidup[scale]`): one actor per GPU (or per CPU worker on a CPU-only
cluster), the model loaded once per actor, segments dispatched longest first, a dead actor's segment retried on
a fresh one. Finished segment files come back through Ray's object store (and, on a remote cluster, the input
goes out through it), so workers need no shared filesystem. Frames done are reported through a queue, for the
job's one progress bar."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from vidup.errors import ConfigError, JobError, VidupError
from vidup.jobs.plan import Segment
from vidup.jobs.segments import store_segment
from vidup.jobs.worker import JobSpec, SegmentResult, SegmentWorker

POLL = 0.2  # seconds between looks at finished segments and progress
REPORT_EVERY = 0.5  # seconds between a worker's progress messages


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--workers and --ray-address run on Ray, which is not installed: pip install 'vidup[scale]'"
        ) from None
    return ray


class SegmentActor:
    """Lives in a Ray worker process (wrapped by `ray.remote` at run time)."""

    def __init__(self, config, engine_factory):
        self.worker = SegmentWorker(config, engine_factory=engine_factory)
        self.input_copy: Path | None = None

    def ready(self) -> bool:
        """Answers once the model is loaded (start-up is measured to here)."""
        return True

    def _input(self, job: JobSpec, shipped) -> Path | None:
        if shipped is None:
            return None
        if self.input_copy is None:
            import ray

            data = ray.get(shipped[0])
            fd, name = tempfile.mkstemp(suffix=job.input.suffix, prefix="vidup-input-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.input_copy = Path(name)
        return self.input_copy

    def run(self, job: JobSpec, segment: Segment, shipped, progress):
        reported, last = [0], [time.monotonic()]

        def on_frame():
            reported[0] += 1
            if time.monotonic() - last[0] >= REPORT_EVERY:
                progress.put((segment.index, reported[0]))
                reported[0], last[0] = 0, time.monotonic()

        with tempfile.TemporaryDirectory(prefix="vidup-segment-") as folder:
            result = self.worker.run(job, segment, Path(folder), self._input(job, shipped), on_frame)
            progress.put((segment.index, reported[0]))
            data = result.file.path.read_bytes()
        return data, result.warnings, result.notes, result.times, result.settled


def _cluster(ray, workers: int, address: str | None) -> tuple[bool, dict]:
    """Start or join a cluster; (whether this call started it, the actor options)."""
    started = False
    if not ray.is_initialized():
        options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(**options)
        started = True
    resources = ray.cluster_resources()
    if resources.get("GPU", 0) >= 1:
        return started, {"num_gpus": 1}
    return started, {"num_cpus": max(1, int(resources.get("CPU", 1)) // workers)}


def run_on_ray(
    job: JobSpec,
    todo: list[Segment],
    folder: Path,
    engine_factory,
    on_frames: Callable[[int], None],
    on_finished: Callable[[SegmentResult], None],
    ship_input: bool | None = None,
) -> float:
    """Run `todo` on Ray, storing each finished segment in `folder` and handing it to `on_finished` (in this
    process). Returns the seconds spent starting or joining the cluster until every actor has its model loaded."""
    ray = import_ray()
    from ray.util.queue import Queue

    config = job.config
    t0 = time.perf_counter()
    started, actor_options = _cluster(ray, config.job.workers, config.job.ray_address)
    if config.job.ray_address and config.job.workers == 1:  # joined a cluster: as many workers as it has GPUs
        workers = max(1, int(ray.cluster_resources().get("GPU", 0)))
    else:
        workers = config.job.workers
    remote = ray.remote(**actor_options)(SegmentActor)
    progress = Queue()
    ship = bool(config.job.ray_address) if ship_input is None else ship_input
    shipped = [ray.put(job.input.read_bytes())] if ship else None
    actors = [remote.remote(config, engine_factory) for _ in range(min(workers, len(todo)))]
    ray.get([actor.ready.remote() for actor in actors])  # every worker up, its model loaded
    startup = time.perf_counter() - t0

    pending = sorted(todo, key=lambda s: (-s.count, s.index))  # longest first: the last to finish is short
    attempts = dict.fromkeys((s.index for s in todo), 0)
    counted = dict.fromkeys((s.index for s in todo), 0)  # frames shown on the bar, taken back on a retry
    running: dict = {}
    idle = list(actors)

    def drain_progress():
        for index, frames in progress.get_nowait_batch(progress.qsize()) if progress.qsize() else ():
            counted[index] += frames
            on_frames(frames)

    try:
        while pending or running:
            while idle and pending:
                actor, segment = idle.pop(), pending.pop(0)
                running[actor.run.remote(job, segment, shipped, progress)] = (actor, segment)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL)
            drain_progress()
            for ref in ready:
                actor, segment = running.pop(ref)
                try:
                    data, warnings, notes, times, settled = ray.get(ref)
                except ray.exceptions.RayActorError:
                    attempts[segment.index] += 1
                    if attempts[segment.index] > config.job.retries:
                        raise JobError(
                            f"segment {segment.index} lost its Ray worker {attempts[segment.index]} "
                            "times; finished segments are kept: rerun to resume"
                        ) from None
                    on_frames(-counted[segment.index])
                    counted[segment.index] = 0
                    pending.insert(0, segment)
                    idle.append(remote.remote(config, engine_factory))  # a fresh actor in place of the dead one
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
                    if isinstance(cause, VidupError):
                        raise cause from None
                    raise
                file = store_segment(folder / segment.name, data)
                drain_progress()
                on_finished(SegmentResult(segment, file, warnings, notes, times, settled))
                idle.append(actor)
    finally:
        for actor in {id(a): a for a in actors + idle + [a for a, _ in running.values()]}.values():
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass  # already dead
        try:
            ray.kill(progress.actor, no_restart=True)
        except Exception:
            pass
        if started:
            ray.shutdown()
    return startup
