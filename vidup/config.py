"""Every setting has one home here. TOML presets (configs/*.toml) and CLI flags only fill these dataclasses;
`VidupConfig.validate()` checks them once, at the edge, before any file is opened or model loaded."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from vidup.errors import ConfigError
from vidup.sizing import SizeSpec
from vidup.steps import denoising_steps

ENGINE_NAMES = ("sr", "flux")  # the registry in vidup.engines.base holds exactly these
# Choice fields are Literal types: the parser refuses anything else, naming the choices; the CLI offers the same.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Deinterlace = Literal["auto", "field", "frame", "off"]
DecodeErrors = Literal["fail", "skip"]
DEINTERLACE_MODES = get_args(Deinterlace)
CODECS = {
    # name -> (default pix_fmt, supports crf, supports preset)
    "libx264": ("yuv420p", True, True),
    "libx265": ("yuv420p", True, True),
    "prores_ks": ("yuv422p10le", False, False),
    "ffv1": ("yuv420p", False, False),
    # NVIDIA's encoders (in PyAV's wheel; they need an NVIDIA GPU and driver at run time). crf maps to their
    # constant-quality `cq`, the x264 preset names to their p1 (fastest) - p7 (best).
    "h264_nvenc": ("yuv420p", True, True),
    "hevc_nvenc": ("yuv420p", True, True),
    "av1_nvenc": ("yuv420p", True, True),
}
NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p1",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p3",
    "medium": "p4",
    "slow": "p5",
    "slower": "p6",
    "veryslow": "p7",
    "placebo": "p7",
}
X26xPreset = Literal[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
]
X26X_PRESETS = get_args(X26xPreset)


@dataclass
class SRConfig:
    model: str = "clear-reality-x4"  # bundled name or path to .pth / .safetensors / .param
    tile: int = 384  # input tile side in pixels for large frames; 0 runs whole frames
    tile_pad: int = 16  # context pixels around each tile so seams do not show
    # Low frequencies (colour, shading) come from the input, detail from the network: GAN models shift flat
    # colours (75% bars: 191 -> green 221), and kits and graphics must keep theirs.
    color_anchor: bool = True
    color_anchor_sigma: float = 1.0  # Gaussian sigma in input pixels below which the input's content is kept
    batch: str = "auto"  # frames per network call: auto (SR_AUTO_BATCH_GPU on a GPU, 1 on the CPU) or a number


SR_AUTO_BATCH_GPU = 8  # SR frames per network call on an accelerator when sr.batch is auto (input up to 1 Mpixel)


OffloadMode = Literal["auto", "none", "model", "sequential"]
CacheKind = Literal["none", "first-block", "taylorseer"]
FluxInit = Literal["lanczos", "sr"]
ControlImage = Literal["stage1", "input"]
NoiseMode = Literal["transported", "fixed"]
ResolutionShift = Literal["capped", "linear"]
OFFLOAD_MODES, CACHE_KINDS, CONTROL_IMAGES = get_args(OffloadMode), get_args(CacheKind), get_args(ControlImage)


def choices(annotation_or_class, field_name: str | None = None) -> tuple[str, ...]:
    """The allowed values of a Literal type, or of a dataclass field annotated with one (for CLI choices)."""
    if field_name is not None:
        annotation_or_class = typing.get_type_hints(annotation_or_class)[field_name]
    return get_args(annotation_or_class)


@dataclass
class FluxConfig:
    """The two-stage FLUX upscaler: stage 1 img2img from the resized input, stage 2 ControlNet upscaler."""

    model: str = "black-forest-labs/FLUX.1-dev"  # diffusers folder, or a repo id already in the HF cache
    controlnet: str = "jasperai/Flux.1-dev-Controlnet-Upscaler"
    loras: list[str] = field(default_factory=list)  # "path[:scale]", applied to both stages
    allow_download: bool = False  # fetch missing weights from the hub (never by default)
    init: FluxInit = "lanczos"  # stage 0: lanczos (the paper) or sr (the feed-forward engine as pre-upscaler)
    prompt: str = "a sharp, detailed professional football broadcast, players in team kits, grass pitch, crowd"
    max_sequence_length: int = 512  # T5 tokens (FLUX.1-dev was trained with 512)
    seed: int = 0
    strength: float = 0.75  # stage 1 img2img strength (the paper's 0.75)
    steps: int = 28
    guidance: float = 3.5
    conditioning_scale: float = 0.6  # stage 2 ControlNet strength (the paper: 0.5-0.65)
    # stage 2 control: the stage-1 result (the paper) or the input resized (the upscaler's model card)
    control_image: ControlImage = "stage1"
    stage2_strength: float = 0.4
    stage2_steps: int = 28
    # Memory: auto picks from the device's free memory: none (every weight resident), model (text encoders leave
    # once the prompt is encoded; the denoising set stays resident), sequential (blocks stream in per step).
    offload: OffloadMode = "auto"
    working_gib_per_mpix: float = 4.0  # planning margin for activations and the VAE per output megapixel
    reserve_gib: float = 2.0  # planning margin for the CUDA context, allocator slack and other processes
    # VAE tiles are each normalised on their own, so their seams stand still on screen (on grass); off by default.
    # The out-of-memory backoff turns it on.
    vae_tiling: bool = False
    # Frames up to this many megapixels (at the working size, a multiple of 16) are denoised whole: 1920x1088 is
    # 2.09. Larger ones are denoised in overlapping latent tiles whose predictions are blended at every step.
    max_megapixels: float = 2.1
    tile_size: int = 1024  # tiled denoising: tile side in output px (FLUX's native ~1 MP)
    tile_overlap: int = 256  # tiled denoising: least overlap between neighbouring tiles, output px
    # How the schedule's shift follows the frame size: capped (the token count is capped at the scheduler's
    # max_image_seq_len, so a strength means the same noise level above 1 MP) | linear (diffusers: it grows)
    resolution_shift: ResolutionShift = "capped"
    cache: CacheKind = "none"  # none | first-block | taylorseer: reuse transformer work between steps
    # first-block: relative change of the first block's residual under which the next step is reused. 0.08 is the
    # FLUX default of ParaAttention's First Block Cache (diffusers' guide); higher trades detail for speed.
    cache_threshold: float = 0.08
    taylorseer_interval: int = 5  # taylorseer: predicted steps between full computations
    taylorseer_warmup: int = 3  # taylorseer: steps always computed at the start of each stage
    compile: bool = False  # torch.compile the transformer's repeated blocks (pays off after a few frames)
    compile_backend: str = "inductor"
    # A distilled few-step LoRA (e.g. FLUX.1-Turbo-Alpha) used on propagated frames only, with its own step count.
    turbo_lora: str | None = None  # "path[:scale]"
    turbo_steps: int = 8


@dataclass
class FlowConfig:
    """Optical flow on the input (DIS) and when a warped pixel is trusted: `MotionAnalyser` takes it whole."""

    preset: Literal["ultrafast", "fast", "medium"] = "medium"  # DIS
    max_side: int = 480  # flow (and cut analysis) on the input scaled to at most this long side (0: full size)
    # DIS refines down to the coarsest pyramid level that keeps at least this many px on the long side (0: the
    # preset's own finest level, half size for medium): small inputs get a full-resolution field
    field_side: int = 240
    workers: str = "auto"  # threads computing flow for upcoming frame pairs: auto (a quarter of the cores, 1-4) or N
    photometric_threshold: float = 0.2  # max RGB difference (0-1) for a warped pixel to be trusted
    # forward-backward check (Sundaram et al. 2010): the round trip may miss by this share of the squared flow...
    consistency_share: float = 0.01
    consistency_px2: float = 0.25  # ...plus this many squared pixels
    feather: float = 1.5  # Gaussian sigma (px) softening the trust mask inside its edges


@dataclass
class ShotConfig:
    """Scene cuts (PySceneDetect's ContentDetector, adapted to a stream): `ShotDetector` takes it whole."""

    threshold: float = 27.0  # content change (0-255 HSV mean delta) that starts a new shot
    adaptive_ratio: float = 3.0  # a cut must also be this many times the recent average change...
    min_explained: float = 0.2  # ...or optical flow must explain less than this share of the frame
    window: int = 8  # frames in the recent average
    min_shot_frames: int = 4  # no cut closer than this to the previous one


@dataclass
class HistoryConfig:
    """How the SR engine takes the warped previous output: `HistoryBlend` is this, plus the blend itself.

    rectified (FSR 2 / TSR-like: bicubic history clamped to the current neighbourhood, reactive weights, detail kept
    at the per-frame level) | highpass (the first release's: the warped previous output's high frequencies replace
    the current's, bilinear; softens through a shot)."""

    mode: Literal["rectified", "highpass"] = "rectified"
    strength: float = 1.0  # highpass: share of the warped previous output's high frequencies taken
    sigma: float = 1.5  # highpass: Gaussian sigma (output px) splitting low from high frequencies (detail)
    # rectified: detail finer than this Gaussian sigma, in input px (scaled by the upscale factor, at least 1 output
    # px), accumulates from history; coarser structure always comes from the current frame
    input_sigma: float = 0.75
    # ...but at most this many output px: the blend's blurs cost in proportion to their sigma, and at extreme factors
    # (16x16 to 8192x8192 is 512x: 384 px) a frame took minutes; from 16x up the split stays at 12 px
    max_sigma: float = 12.0
    weight: float = 0.85  # rectified: largest share of the (clamped) history in a pixel
    radius: int = 2  # rectified: neighbourhood (2r+1)^2 output pixels whose colour range bounds the history
    reactive: float = 2.0  # rectified: history weight lost per unit of clamp distance (relative to the local range)
    gain_max: float = 2.0  # rectified: most the blend's detail is scaled up to the per-frame energy
    sharpen: float = 0.0  # rectified: unsharp amount on the history before clamping (RCAS-like; 0: off)


@dataclass
class PropagationConfig:
    """FLUX propagation (differential diffusion): trusted pixels stay pinned to the warped previous result, noised to
    the current sigma, until the schedule falls below the hand-off strengths; untrusted pixels start at the
    keyframe's. `Propagator` takes it whole."""

    strength: float = 0.4  # stage 1 hand-off strength on propagated frames
    stage2_strength: float = 0.25  # stage 2 hand-off strength on propagated frames
    new_content_steps: int = 3  # steps from the keyframe strength down to the hand-off where content is new
    noise: NoiseMode = "transported"  # transported (follows the flow, stays white) | fixed (screen-fixed)
    keyframe_interval: int = 0  # also a keyframe every N frames of a shot (0: only at cuts)
    min_trusted: float = 0.2  # a frame whose flow trusts less than this share is a keyframe
    # latent cells trusted less than this start from the current frame, never the warped previous one (cells
    # straddling an occlusion edge would begin from wrong content)
    min_cell_trust: float = 0.5
    color_fix: Literal["wavelet", "adain", "none"] = "wavelet"  # anchor outputs to the input's low frequencies


@dataclass
class TemporalConfig:
    """Seed each frame from the previous output, warped by optical flow; reset at cuts."""

    enabled: bool = True
    flow: FlowConfig = field(default_factory=FlowConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)  # the SR engine's
    flux: PropagationConfig = field(default_factory=PropagationConfig)  # the FLUX engine's
    # SR frame path after the network: auto (torch on a GPU, OpenCV on the CPU) | torch | cv2
    backend: Literal["auto", "torch", "cv2"] = "auto"


@dataclass
class OutputConfig:
    codec: str = "libx264"
    crf: int | None = 18  # visually lossless for x264/x265; ignored by prores/ffv1
    preset: X26xPreset | None = "veryfast"
    pix_fmt: str | None = None  # None: the source's bit depth and chroma, as far as the codec allows
    # square: anamorphic input becomes square pixels at its display aspect; keep: its sample aspect ratio is kept
    pixel_aspect: Literal["square", "keep"] = "square"
    # Encoder threads, fixed rather than the encoder's own choice (which follows the core count): x264's output
    # depends on its thread count, and segments encoded on different machines must concatenate byte-identically.
    threads: int = 4


@dataclass
class ColourConfig:
    """HDR handling. Engines see the source's code values unless told otherwise."""

    tonemap: Literal["none", "sdr"] = "none"  # none | sdr: HDR (PQ, HLG) converted to BT.709 SDR, with a warning
    # PQ sources run through the engines as PQ code values (code) or as display-referred light (display)
    pq_working: Literal["code", "display"] = "code"
    sdr_white_nits: float = 203.0  # reference white (ITU-R BT.2408): where SDR white sits in HDR
    hdr_peak_nits: float = 1000.0  # peak of the display-referred range (PQ working space and tone mapping)


@dataclass
class JobConfig:
    """Files are upscaled as a job: segments planned at the cuts, each encoded to its own file in a job folder
    beside the output (resumable), then concatenated without re-encoding."""

    segment_frames: int = 300  # longest segment; a longer shot is split inside, shorter shots share a segment
    warmup_frames: int = 8  # frames run (not written) before a boundary inside a shot, to rebuild temporal state
    workers: int = 1  # 1: in this process; more: a local Ray cluster (vidup[scale])
    ray_address: str | None = None  # join an existing Ray cluster ("auto", "ray://host:10001")
    fresh: bool = False  # ignore a job folder left by an earlier run
    retries: int = 2  # times a segment is retried after its Ray worker died


@dataclass
class TrainConfig:
    """`vidup train-lora`: a LoRA on the FLUX transformer (the base model is flux.model), trained on stills and
    frames sampled from clips, for the same engine that upscales with it."""

    rank: int = 16
    alpha: float = 16.0
    steps: int = 1000
    lr: float = 1e-4
    batch: int = 1
    grad_accum: int = 1
    resolution: int = 1024  # training area is resolution^2, in aspect-ratio buckets (sides multiples of 16)
    seed: int = 0
    feed_forward: bool = False  # also train the feed-forward layers (attention q/k/v/out on both streams always)
    gradient_checkpointing: bool = True
    optimizer: Literal["auto", "adamw", "adamw8bit"] = "auto"  # auto: 8-bit AdamW with bitsandbytes on CUDA, else AdamW
    weight_decay: float = 1e-4
    timestep_mean: float = 0.0  # logit-normal timestep sampling (then shifted as inference shifts at that size)
    timestep_std: float = 1.0
    default_caption: str = "a football broadcast frame, players in team kits on a grass pitch"
    small_images: Literal["upsample", "refuse"] = (
        "upsample"  # images smaller than their bucket (upsample: with a warning)
    )
    clip_frames: int = 40  # at most this many frames from each clip
    frames_per_shot: int = 4  # at most this many frames from each shot of a clip
    duplicate_threshold: float = 3.0  # mean grey difference (0-255, at 64 px) under which a frame repeats another
    checkpoint_every: int = 250
    validate_every: int = 250  # 0: no validation sheets
    validation_frames: int = 2  # held out from training, upscaled from a degraded copy at each validation
    validation_degrade: int = 4  # the held-out frames are downscaled by this before the engine upscales them


# Settings that change how a job runs, never what it writes: a resume may differ in these.
RUN_ONLY_SETTINGS = {
    "quiet",
    "overwrite",
    "pipeline",
    "temporal.flow.workers",
    "job.workers",
    "job.ray_address",
    "job.fresh",
    "job.retries",
}
# Settings an "auto" stands for until `vidup.engines.base.settle` resolves it on the machine that runs the engine.
SETTLED_SETTINGS = ("device", "precision", "sr.batch", "temporal.backend")


@dataclass
class VidupConfig:
    engine: str = "sr"
    size: str | None = "1024"  # long side ("1024") or "WxH"; ignored when scale is set
    scale: float | None = None
    device: str = "auto"
    precision: Precision = "auto"  # auto | fp32 | bf16 | fp16
    start: str | None = None  # first frame: a frame index ("120") or a time ("4.8s", "00:01:02.5")
    end: str | None = None  # end, exclusive, same forms
    overwrite: bool = False
    quiet: bool = False
    on_decode_error: DecodeErrors = "fail"  # fail | skip: whether a corrupt packet midway stops the run
    pipeline: bool = True  # overlap decoding, motion analysis, the engine and encoding in threads
    deinterlace: Deinterlace = "auto"  # auto (detect; field rate) | field (50p from 25i) | frame (25p from 25i) | off
    idet_frames: int = 32  # frames idet looks at when a stream's field flags are unknown
    sr: SRConfig = field(default_factory=SRConfig)
    flux: FluxConfig = field(default_factory=FluxConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    colour: ColourConfig = field(default_factory=ColourConfig)
    job: JobConfig = field(default_factory=JobConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def settings(self) -> dict[str, Any]:
        """Every setting as a flat {dotted name: value} dict (what a job's manifest compares)."""
        flat: dict[str, Any] = {}

        def walk(obj: Any, prefix: str) -> None:
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if dataclasses.is_dataclass(value):
                    walk(value, f"{prefix}{f.name}.")
                else:
                    flat[f"{prefix}{f.name}"] = list(value) if isinstance(value, (list, tuple)) else value

        walk(self, "")
        return flat

    @property
    def size_spec(self) -> SizeSpec:
        return SizeSpec.parse(None if self.scale is not None else self.size, self.scale)

    def validate(self) -> "VidupConfig":
        if self.engine not in ENGINE_NAMES:
            raise ConfigError(f"unknown engine '{self.engine}'; available: {', '.join(ENGINE_NAMES)}")
        self.size_spec  # parses, raising ConfigError on nonsense
        if not 1 <= self.colour.sdr_white_nits < self.colour.hdr_peak_nits <= 10000:
            raise ConfigError("colour.sdr_white_nits must be below colour.hdr_peak_nits, both within 1-10000 cd/m2")
        if self.idet_frames < 4:
            raise ConfigError("idet_frames must be at least 4")
        if self.sr.color_anchor_sigma <= 0:
            raise ConfigError("sr.color_anchor_sigma must be > 0")
        if self.sr.batch != "auto" and not (str(self.sr.batch).isdigit() and int(self.sr.batch) >= 1):
            raise ConfigError(f"sr.batch must be auto or a whole number >= 1, got '{self.sr.batch}'")
        out = self.output
        if out.codec not in CODECS:
            raise ConfigError(f"codec must be one of {', '.join(CODECS)}, got '{out.codec}'")
        _, has_crf, has_preset = CODECS[out.codec]
        if out.crf is not None and has_crf and not 0 <= out.crf <= 51:
            raise ConfigError(f"crf must be between 0 and 51, got {out.crf}")
        if self.sr.tile and self.sr.tile < 32:
            raise ConfigError(f"sr.tile must be 0 (off) or at least 32, got {self.sr.tile}")
        if self.sr.tile_pad < 0:
            raise ConfigError("sr.tile_pad must be >= 0")
        if out.threads < 1:
            raise ConfigError("output.threads must be at least 1")
        job = self.job
        if job.segment_frames < 1 or job.warmup_frames < 0 or job.retries < 0:
            raise ConfigError("job.segment_frames must be >= 1, job.warmup_frames and job.retries >= 0")
        self._validate_train()
        if job.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {job.workers}")
        self._validate_flux()
        self._validate_temporal()
        return self

    def _validate_train(self) -> None:
        t = self.train
        if t.resolution % 16 or t.resolution < 64:
            raise ConfigError(
                f"--resolution must be a multiple of 16 (FLUX's latent patches), at least 64; got {t.resolution}"
            )
        for name in (
            "rank",
            "steps",
            "batch",
            "grad_accum",
            "clip_frames",
            "frames_per_shot",
            "checkpoint_every",
            "validation_degrade",
        ):
            if getattr(t, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(t, name)}")
        if t.alpha <= 0 or t.lr <= 0 or t.validate_every < 0 or t.validation_frames < 0 or t.timestep_std <= 0:
            raise ConfigError(
                "train.alpha, train.lr and train.timestep_std must be > 0; train.validate_every and "
                "train.validation_frames >= 0"
            )

    def _validate_temporal(self) -> None:
        t = self.temporal
        flow, shots, history, prop = t.flow, t.shots, t.history, t.flux
        for name, value in (
            ("history.strength", history.strength),
            ("flux.strength", prop.strength),
            ("flux.stage2_strength", prop.stage2_strength),
            ("flow.photometric_threshold", flow.photometric_threshold),
            ("shots.min_explained", shots.min_explained),
            ("flux.min_trusted", prop.min_trusted),
            ("flux.min_cell_trust", prop.min_cell_trust),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"temporal.{name} must be between 0 and 1, got {value}")
        if flow.workers != "auto" and not (str(flow.workers).isdigit() and int(flow.workers) >= 1):
            raise ConfigError(f"temporal.flow.workers must be auto or a whole number >= 1, got '{flow.workers}'")
        if flow.max_side and flow.max_side < 32:
            raise ConfigError("temporal.flow.max_side must be 0 (full size) or at least 32")
        if flow.field_side < 0 or flow.consistency_share < 0 or flow.consistency_px2 < 0 or flow.feather < 0:
            raise ConfigError("temporal.flow.field_side, consistency_share, consistency_px2 and feather must be >= 0")
        if shots.threshold <= 0 or shots.adaptive_ratio < 1 or shots.window < 1 or shots.min_shot_frames < 1:
            raise ConfigError(
                "temporal.shots: threshold must be > 0, adaptive_ratio >= 1, window and min_shot_frames >= 1"
            )
        if history.input_sigma <= 0 or history.sigma <= 0 or history.max_sigma < 1:
            raise ConfigError("temporal.history.input_sigma and sigma must be > 0, max_sigma >= 1")
        if history.radius < 0 or history.reactive < 0 or history.gain_max < 1 or history.sharpen < 0:
            raise ConfigError("temporal.history.radius, reactive and sharpen must be >= 0, gain_max >= 1")
        if not 0.0 <= history.weight < 1.0:
            raise ConfigError("temporal.history.weight must be in [0, 1)")
        if prop.keyframe_interval < 0:
            raise ConfigError("temporal.flux.keyframe_interval must be 0 (keyframes only at cuts) or a frame count")
        if prop.new_content_steps < 1:
            raise ConfigError("temporal.flux.new_content_steps must be at least 1")

    def _validate_flux(self) -> None:
        flux, temporal = self.flux, self.temporal
        for name, value, low, high in (
            ("strength", flux.strength, 0.0, 1.0),
            ("stage2_strength", flux.stage2_strength, 0.0, 1.0),
            ("conditioning_scale", flux.conditioning_scale, 0.0, 2.0),
            ("guidance", flux.guidance, 0.0, 30.0),
            ("cache_threshold", flux.cache_threshold, 0.0, 10.0),
        ):
            if not low <= value <= high:
                raise ConfigError(f"flux.{name} must be between {low} and {high}, got {value}")
        for name, steps in (
            ("steps", flux.steps),
            ("stage2_steps", flux.stage2_steps),
            ("turbo_steps", flux.turbo_steps),
        ):
            if not 1 <= steps <= 200:
                raise ConfigError(f"flux.{name} must be between 1 and 200, got {steps}")
        if not 1 <= flux.max_sequence_length <= 512:
            raise ConfigError(f"flux.max_sequence_length must be between 1 and 512, got {flux.max_sequence_length}")
        if flux.taylorseer_interval < 1 or flux.taylorseer_warmup < 0:
            raise ConfigError("flux.taylorseer_interval must be >= 1 and flux.taylorseer_warmup >= 0")
        if flux.working_gib_per_mpix < 0 or flux.reserve_gib < 0:
            raise ConfigError("flux.working_gib_per_mpix and flux.reserve_gib must be >= 0")
        if flux.max_megapixels <= 0:
            raise ConfigError(f"flux.max_megapixels must be > 0, got {flux.max_megapixels}")
        if flux.tile_size < 128 or flux.tile_size % 16:
            raise ConfigError(f"flux.tile_size must be a multiple of 16 and at least 128 px, got {flux.tile_size}")
        if not 0 <= flux.tile_overlap <= flux.tile_size // 2:
            raise ConfigError(
                f"flux.tile_overlap must be between 0 and half the tile size ({flux.tile_size // 2} px), "
                f"got {flux.tile_overlap}"
            )
        # The pipelines' own rule (img2img runs steps - int(steps - steps * strength) steps): a setting that leaves
        # none would crash on an empty schedule after the weights load, so it is refused here.
        runs = [
            ("flux.steps x flux.strength", flux.steps, flux.strength),
            ("flux.stage2_steps x flux.stage2_strength", flux.stage2_steps, flux.stage2_strength),
        ]
        if temporal.enabled:
            propagated_steps = flux.turbo_steps if flux.turbo_lora else None
            runs += [
                ("flux.steps x temporal.flux.strength", propagated_steps or flux.steps, temporal.flux.strength),
                (
                    "flux.stage2_steps x temporal.flux.stage2_strength",
                    propagated_steps or flux.stage2_steps,
                    temporal.flux.stage2_strength,
                ),
            ]
        for what, steps, strength in runs:
            if denoising_steps(steps, strength) < 1:
                raise ConfigError(
                    f"{what} leaves no denoising step ({steps} x {strength}); raise the strength or the step count"
                )
        for spec in flux.loras + ([flux.turbo_lora] if flux.turbo_lora else []):
            parse_lora_spec(spec)


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """'path[:scale]' -> (path, scale); the scale defaults to 1.0."""
    path, _, tail = str(spec).rpartition(":")
    if path and re.fullmatch(r"-?\d+(\.\d*)?", tail):
        return path, float(tail)
    if not spec:
        raise ConfigError("an empty --lora was given")
    return str(spec), 1.0


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    if typing.get_origin(annotation) is Literal:
        if value in get_args(annotation):
            return value
        choices = ", ".join(str(choice) for choice in get_args(annotation))
        raise ConfigError(f"{where} must be one of {choices}, got {value!r}")
    if typing.get_origin(annotation) is list:
        items = value if isinstance(value, (list, tuple)) else [value]
        (item_type,) = typing.get_args(annotation)
        return [_coerce(item, item_type, where) for item in items]
    hint = typing.get_args(annotation) or (annotation,)
    if value is None and type(None) in hint:
        return None
    for candidate in hint:
        if candidate is type(None):
            continue
        if typing.get_origin(candidate) is Literal:
            return _coerce(value, candidate, where)
        if candidate is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            continue
        try:
            if candidate is float and isinstance(value, (int, float, str)):
                return float(value)
            if candidate is int and isinstance(value, (int, str)) and not isinstance(value, bool):
                return int(value)
            if candidate is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
        except ValueError:
            continue
    raise ConfigError(f"{where}: cannot use {value!r} here (expected {annotation})")


def _fill(obj: Any, values: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        key_name = key.replace("-", "_")
        if key_name not in names:
            raise ConfigError(f"{where}: unknown setting '{key}'; known: {', '.join(sorted(names))}")
        current = getattr(obj, key_name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a table")
            _fill(current, value, f"{where}.{key}")
        else:
            setattr(obj, key_name, _coerce(value, hints[key_name], f"{where}.{key}"))


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> VidupConfig:
    """Defaults, then a TOML file, then dotted overrides ({"sr.model": ..., "output.crf": 20}); validated."""
    config = VidupConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        _fill(config, data, path.name)
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        nested: dict[str, Any] = {leaf: value}
        for parent in reversed(parents):
            nested = {parent: nested}
        _fill(config, nested, "option")
    return config.validate()
