"""QA previews, filter mode and the Python API all run through the same frame-level path as `vidup upscale`."""

import io
import subprocess
import sys

import av
import numpy as np
import pytest

from vidup import Upscaler, load_config, upscale_video
from vidup.errors import ConfigError, PipeFormatError
from vidup.filter import OutputPipeClosedError, run_filter
from vidup.preview import CROP, ZOOM, PANEL_WIDTH, choose_crops, preview_frame
from media import decoded, make_clip, pattern


@pytest.fixture
def upscaler_factory(sr_engine):
    return lambda **overrides: Upscaler(load_config(overrides={"size": "128", **overrides}), sr_engine)


def test_qa_crops_spread_beyond_the_busiest_area():
    rng = np.random.default_rng(0)
    image = np.full((576, 1024, 3), 90, np.uint8)
    image[:, :, 1] += (rng.random((576, 1024)) * 30).astype(np.uint8)  # mild grass texture everywhere
    image[20:140, 20:330] = rng.integers(0, 2, (120, 310, 1)) * 255  # a scoreboard: the busiest area by far
    crops = choose_crops(image)
    assert len(crops) == 3
    assert crops[0][0] < 330 and crops[0][1] < 140  # the most detailed cell is still shown first
    spacing = 1024 // 3
    for i, (x, y) in enumerate(crops):
        for cx, cy in crops[:i]:
            assert max(abs(x - cx), abs(y - cy)) >= spacing
    assert sum(x < 330 and y < 140 for x, y in crops) == 1  # the scoreboard takes one crop, not all three


def y4m_bytes(frames, rate=25):
    buf = io.BytesIO()
    with av.open(buf, "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=rate)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def test_preview_sheet_panels_size_and_seeking(tmp_path, upscaler_factory):
    clip = make_clip(tmp_path / "gop.mp4", frames=40, size=(96, 64), gop=10)
    result = preview_frame(clip, load_config(overrides={"size": "128"}), frame=25, upscaler=upscaler_factory())
    names = [p.name for p in result.panels]
    assert names[:2] == ["input (nearest)", "Lanczos"] and "clear-reality-x4 x4" in names
    assert result.frame_index == 25
    assert result.frames_decoded <= 6  # from the keyframe at 20 to the target, nothing after it
    thumb_h = round(PANEL_WIDTH * 86 / 128)  # 96x64 at a 128 long side: 128x86
    row_h = max(thumb_h, CROP * ZOOM) + 4
    assert 1 <= len(result.crops) <= 3  # a 128x86 frame has room for one 96 px crop
    assert result.sheet.shape == (
        row_h * len(result.panels),
        PANEL_WIDTH + len(result.crops) * (CROP * ZOOM + 4) + 4,
        3,
    )
    assert all(p.image.shape[:2] in [(86, 128), (256, 384)] for p in result.panels)


def test_preview_with_context_matches_the_same_frame_in_a_full_run(tmp_path, upscaler_factory):
    clip = make_clip(tmp_path / "in.mp4", frames=8, size=(96, 64), gop=4)
    full = list(upscaler_factory().upscale(decoded(clip)))
    result = preview_frame(clip, load_config(), frame=6, context=6, upscaler=upscaler_factory())
    assert np.array_equal(result.panels[-1].image, full[6])
    assert result.frames_decoded == 7


def test_preview_rejects_frames_past_the_end(tmp_path, upscaler_factory):
    clip = make_clip(tmp_path / "in.mp4", frames=5)
    with pytest.raises(ConfigError, match="past its end"):
        preview_frame(clip, load_config(), frame=9, upscaler=upscaler_factory())


def test_preview_cli_writes_a_png(tmp_path, sample):
    from click.testing import CliRunner

    from vidup.cli import main

    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(main, ["preview", str(sample), "--time", "2.0", "-o", str(out), "--size", "512"])
    assert result.exit_code == 0, result.output
    import cv2

    assert cv2.imread(str(out)).shape[1] == PANEL_WIDTH + 3 * (CROP * ZOOM + 4) + 4


@pytest.mark.slow
def test_filter_y4m_through_a_subprocess():
    frames = [pattern(i, 64, 48) for i in range(6)]
    proc = subprocess.run(
        [sys.executable, "-m", "vidup.cli", "filter", "--size", "128", "-q"],
        input=y4m_bytes(frames),
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""  # --quiet: nothing on stderr either
    with av.open(io.BytesIO(proc.stdout), format="yuv4mpegpipe") as c:  # stdout is a valid y4m stream
        out = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(out) == 6 and out[0].shape == (96, 128, 3)


def test_filter_stops_cleanly_on_sigterm_while_waiting_for_input():
    import signal

    data = y4m_bytes([pattern(i, 64, 48) for i in range(2)])
    one_frame = data[: data.index(b"FRAME", data.index(b"FRAME") + 1)]  # header and the first frame only
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidup", "filter", "--size", "128", "-q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdin.write(one_frame)
    proc.stdin.flush()
    header = proc.stdout.readline()  # written once the model is up; the first frame follows
    frame_line = proc.stdout.readline()
    assert header.startswith(b"YUV4MPEG2 W128 H96") and frame_line == b"FRAME\n"
    proc.stdout.read(128 * 96 * 3 // 2)  # the whole first frame: now vidup waits on stdin for the second
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert stderr.decode().strip() == "vidup: interrupted"  # no claim that nothing was written: frames were


def test_filter_y4m_in_process_keeps_frame_count_and_rate(upscaler_factory):
    frames = [pattern(i, 64, 48) for i in range(4)]
    stdout = io.BytesIO()
    written = run_filter(
        io.BytesIO(y4m_bytes(frames, rate=30)),
        stdout,
        load_config(overrides={"quiet": True}),
        upscaler=upscaler_factory(),
    )
    assert written == 4 and stdout.getvalue().startswith(b"YUV4MPEG2 W128 H96 F30:1")
    assert stdout.getvalue().count(b"FRAME\n") == 4


def test_y4m_full_range_is_read_as_full_range_and_kept_on_output(upscaler_factory):
    from vidup.video.pipe import read_y4m

    width, height = 64, 48
    plane = lambda value, w, h: bytes([value]) * (w * h)  # noqa: E731
    frame = plane(235, width, height) + plane(128, width // 2, height // 2) * 2
    for tag, grey in ((" XCOLORRANGE=FULL", 235), ("", 255), (" XCOLORRANGE=LIMITED", 255)):
        data = f"YUV4MPEG2 W{width} H{height} F25:1 C420jpeg{tag}\n".encode() + b"FRAME\n" + frame
        fmt, frames = read_y4m(io.BytesIO(data))
        rgb = next(frames)
        assert fmt.full_range == (tag == " XCOLORRANGE=FULL")
        assert abs(int(rgb[0, 0, 0]) - grey) <= 1 and np.ptp(rgb) <= 1  # Y 235 is white only in limited range
        stdout = io.BytesIO()
        run_filter(io.BytesIO(data), stdout, load_config(overrides={"quiet": True}), upscaler=upscaler_factory())
        header, _, body = stdout.getvalue().partition(b"\nFRAME\n")
        assert header.endswith(b"XCOLORRANGE=FULL") == fmt.full_range
        luma = np.frombuffer(body[: 128 * 96], np.uint8)
        assert abs(int(np.median(luma)) - 235) <= 5  # the same grey in the same range (the wrong one is off by 17+)


def test_rawvideo_round_trip(upscaler_factory):
    frames = [pattern(i, 64, 48) for i in range(3)]
    stdout = io.BytesIO()
    written = run_filter(
        io.BytesIO(b"".join(f.tobytes() for f in frames)),
        stdout,
        load_config(overrides={"quiet": True}),
        "rawvideo",
        "64x48",
        "25",
        upscaler=upscaler_factory(),
    )
    assert written == 3 and len(stdout.getvalue()) == 3 * 128 * 96 * 3
    first = np.frombuffer(stdout.getvalue()[: 128 * 96 * 3], np.uint8).reshape(96, 128, 3)
    assert np.array_equal(first, upscaler_factory().upscale_frame(frames[0]))


@pytest.mark.parametrize(
    "data,message",
    [
        (b"YUV4MPEG2 W64\n", "malformed y4m header"),
        (b"RIFF....WAVEfmt \n", "not a y4m stream"),
        (b"YUV4MPEG2 W64 H48 F25:1 C411\nFRAME\n", "not supported"),
        (b"YUV4MPEG2 W64 H48 F25:1\nFRAME\n" + b"\x00" * 100, "truncated"),
        (b"", "no input"),
        (b"YUV4MPEG2 W64 H48 F25:1 XCOLORRANGE=WIDE\nFRAME\n", "XCOLORRANGE"),
    ],
)
def test_malformed_streams_are_clear_errors(data, message, upscaler_factory):
    with pytest.raises(PipeFormatError, match=message):
        run_filter(io.BytesIO(data), io.BytesIO(), load_config(overrides={"quiet": True}), upscaler=upscaler_factory())


@pytest.mark.slow
def test_malformed_header_through_the_cli_exits_nonzero():
    proc = subprocess.run([sys.executable, "-m", "vidup.cli", "filter"], input=b"hello\n", capture_output=True)
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().startswith("vidup: error: not a y4m stream")


def test_closed_output_pipe_is_a_clear_error(upscaler_factory):
    class ClosesAfterHeader(io.BytesIO):
        def write(self, data):
            if self.tell() > 0:
                raise BrokenPipeError
            return super().write(data)

    with pytest.raises(OutputPipeClosedError, match="after 0 frames"):
        run_filter(
            io.BytesIO(y4m_bytes([pattern(0, 64, 48)] * 3)),
            ClosesAfterHeader(),
            load_config(overrides={"quiet": True}),
            upscaler=upscaler_factory(),
        )


def test_upscaler_api_gives_the_same_frames_as_the_cli(tmp_path, sr_engine, monkeypatch):

    clip = make_clip(tmp_path / "in.mp4", frames=6, size=(96, 64))
    config = load_config(overrides={"size": "128", "quiet": True, "output.codec": "ffv1", "output.pix_fmt": "yuv444p"})
    upscale_video(clip, tmp_path / "out.mkv", config, engine=sr_engine)
    from_file = decoded(tmp_path / "out.mkv")
    with av.open(str(clip)) as c:  # av.VideoFrame input works as well as arrays
        api = list(Upscaler(config, sr_engine).upscale(c.decode(video=0)))
    assert len(api) == len(from_file) == 6
    for a, b in zip(api, from_file):
        assert np.abs(a.astype(int) - b).max() <= 3  # only the lossless file's YUV 4:4:4 rounding differs


def test_reset_marks_a_cut(upscaler_factory):
    upscaler = upscaler_factory()
    frames = [pattern(0, 64, 48), np.roll(pattern(0, 64, 48), 1, axis=1)]
    upscaler.upscale_frame(frames[0])
    upscaler.reset()
    after_reset = upscaler.upscale_frame(frames[1])
    assert np.array_equal(after_reset, upscaler_factory().upscale_frame(frames[1]))
