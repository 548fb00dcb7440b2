"""Broadcast material, end to end through the CLI: each kind of input is generated here with PyAV, upscaled, and
read back the way a user would check it (frame counts and timestamps, tags and side data, bit depth, aspect,
streams, the one-line error, no files left)."""

import io
import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner

from vidup.cli import main
from vidup.video.colour import HdrMetadata
from vidup.video.reader import probe
from broadcast_media import (
    FONT,
    anamorphic_clip,
    colour_bars,
    comb_energy,
    damaged_ts,
    deep_clip,
    duplicate_pts_mkv,
    hdr_clip,
    interlaced_clip,
    klv_ts,
    mkv_with_attachment,
    resolution_change_ts,
    timecode_clip,
    ts_clip,
    wrapped_ts,
)
from media import frame_times, make_clip, packets


@pytest.fixture
def cli(sr_engine):
    def run(*args):
        return CliRunner().invoke(
            main,
            ["upscale", *[str(a) for a in args]],
            catch_exceptions=False,
            obj={"engine_factory": lambda config: sr_engine},
        )

    return run


def luma_plane(path, index=0):
    """The Y plane of decoded frame `index`, at its stored bit depth."""
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == index:
                deep = frame.format.components[0].bits > 8
                dtype = np.uint16 if deep else np.uint8
                plane = frame.planes[0]
                rows = np.frombuffer(plane, dtype).reshape(frame.height, plane.line_size // np.dtype(dtype).itemsize)
                return rows[:, : frame.width].copy(), frame
    raise AssertionError(f"{path} has no frame {index}")


def gray_frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]


# --- interlaced ---------------------------------------------------------------------------------------------


def test_interlaced_source_is_detected_and_deinterlaced_at_field_rate(tmp_path, cli):
    clip = interlaced_clip(tmp_path / "25i.mkv", frames=12)
    source = probe(clip).source
    assert source.interlaced is True and source.field_order == "tff"
    runs = {}
    for mode in ("auto", "frame", "off"):
        out = tmp_path / f"{mode}.mkv"
        result = cli(clip, out, "--scale", "1", "--deinterlace", mode)
        assert result.exit_code == 0, result.output
        runs[mode] = (out, result.stderr)
    times_in = frame_times(clip)
    fields = sorted(times_in + [round(t + 0.02, 4) for t in times_in])
    assert frame_times(runs["auto"][0]) == fields  # 25i -> 50p, every field half a frame after its frame
    assert frame_times(runs["frame"][0]) == times_in  # 25i -> 25p: same count, same timestamps
    assert "field rate" in runs["auto"][1] and "combing is upscaled" in runs["off"][1]
    combing = {mode: np.mean([comb_energy(g) for g in gray_frames(out)[1:-1]]) for mode, (out, _) in runs.items()}
    assert combing["auto"] < 0.3 * combing["off"] and combing["frame"] < 0.3 * combing["off"], combing
    for mode in runs:
        assert packets(runs[mode][0], "audio") == packets(clip, "audio")  # audio untouched, in sync


def test_unflagged_stream_is_checked_with_idet(tmp_path):
    from vidup.video.reader import sniff_interlacing

    def write(path, woven):
        from broadcast_media import moving_bar

        with av.open(str(path), "w") as out:
            video = out.add_stream("ffv1", rate=25)
            video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
            for i in range(12):
                frame = moving_bar(2 * i, 96, 64)
                if woven:
                    frame[1::2] = moving_bar(2 * i + 1, 96, 64)[1::2]
                f = av.VideoFrame.from_ndarray(frame, format="rgb24")
                f.pts = i
                out.mux(video.encode(f))
            out.mux(video.encode(None))
        return path

    combed, clean = write(tmp_path / "combed.mkv", True), write(tmp_path / "clean.mkv", False)
    for path, expected in ((combed, True), (clean, False)):
        info = probe(path)
        assert info.source.interlaced is None  # ffv1 carries no field flags
        assert sniff_interlacing(path, info, 12) is expected


# --- bit depth ----------------------------------------------------------------------------------------------


def ramp_profile(path):
    y, _ = luma_plane(path)
    return np.median(y[4:-4].astype(np.int64), axis=0)[8:-8]


def test_ten_bit_path_is_lossless_and_eight_bits_would_staircase(tmp_path, cli):
    clip = deep_clip(tmp_path / "ramp.mkv")
    out = tmp_path / "same.mkv"  # scale 1: the engine passes the frame through, so every code must survive
    assert cli(clip, out, "--scale", "1", "--codec", "ffv1", "-q").exit_code == 0
    assert probe(out).pix_fmt == "yuv420p10le"
    assert np.array_equal(luma_plane(out)[0], luma_plane(clip)[0])
    eight = tmp_path / "eight.mkv"  # the 8-bit counterpart is the staircase the issue saw, and it says so
    result = cli(clip, eight, "--scale", "1", "--codec", "ffv1", "--pix-fmt", "yuv420p")
    assert result.exit_code == 0 and "stores 8 bits; the source has 10" in result.stderr
    assert len(np.unique(luma_plane(eight)[0])) <= 6 < 21 == len(np.unique(luma_plane(clip)[0]))


def test_ten_bit_through_the_network_keeps_its_levels(tmp_path, cli):
    clip = deep_clip(tmp_path / "ramp.mkv")
    out = tmp_path / "up.mkv"
    assert cli(clip, out, "--scale", "2", "--codec", "ffv1", "-q").exit_code == 0
    profile = ramp_profile(out)
    smooth = np.convolve(profile, np.ones(15) / 15, "valid")
    assert len(np.unique(profile)) >= 15 and np.diff(smooth).min() > -0.2  # fine levels, still a rising ramp
    assert abs(profile[:20].mean() - 400) < 3 and abs(profile[-20:].mean() - 420) < 3


def test_explicit_x265_ten_bit_is_really_ten_bit(tmp_path, cli):
    clip = deep_clip(tmp_path / "ramp.mkv")
    out = tmp_path / "up.mp4"
    assert (
        cli(clip, out, "--scale", "1", "--codec", "libx265", "--pix-fmt", "yuv420p10le", "--crf", "2", "-q").exit_code
        == 0
    )
    assert probe(out).pix_fmt == "yuv420p10le"
    assert np.abs(ramp_profile(out) - ramp_profile(clip)).max() <= 1 and len(np.unique(ramp_profile(out))) >= 15


def test_422_ten_bit_is_kept_where_the_codec_allows(tmp_path, cli):
    clip = deep_clip(tmp_path / "422.mkv", pix_fmt="yuv422p10le")
    for codec, suffix in (("libx264", ".mp4"), ("prores_ks", ".mov")):
        out = tmp_path / f"up{suffix}"
        assert cli(clip, out, "--scale", "2", "--codec", codec, "-q").exit_code == 0
        assert probe(out).pix_fmt == "yuv422p10le", codec


def test_eight_bit_sources_keep_todays_format(tmp_path, cli):
    clip = make_clip(tmp_path / "in.mp4", frames=3, size=(64, 48))
    out = tmp_path / "up.mp4"
    assert cli(clip, out, "--size", "128", "-q").exit_code == 0
    assert probe(out).pix_fmt == "yuv420p"


# --- HDR ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transfer", [16, 18], ids=["pq", "hlg"])
def test_hdr_tags_and_side_data_survive(tmp_path, cli, transfer):
    clip = hdr_clip(tmp_path / "hdr.mp4", transfer=transfer)
    out = tmp_path / "up.mp4"
    assert cli(clip, out, "--scale", "2", "-q").exit_code == 0
    _, frame = luma_plane(out)
    _, source = luma_plane(clip)
    assert (frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range) == (9, transfer, 9, 1)
    assert frame.format.name == "yuv420p10le"
    assert HdrMetadata.from_frame(frame) == HdrMetadata.from_frame(source) is not None
    assert HdrMetadata.from_frame(frame).max_cll == 1000


def test_hdr_into_prores_keeps_tags_and_says_the_metadata_cannot_go(tmp_path, cli):
    clip = hdr_clip(tmp_path / "hdr.mp4")
    out = tmp_path / "up.mov"
    result = cli(clip, out, "--scale", "2", "--codec", "prores_ks")
    assert result.exit_code == 0 and "cannot carry HDR10 mastering-display" in result.stderr
    _, frame = luma_plane(out)
    assert (frame.color_primaries, frame.color_trc, frame.colorspace) == (9, 16, 9)


def test_tonemap_to_sdr_retags_and_warns(tmp_path, cli):
    clip = hdr_clip(tmp_path / "hdr.mp4")
    out = tmp_path / "sdr.mp4"
    result = cli(clip, out, "--scale", "2", "--tonemap", "sdr")
    assert result.exit_code == 0 and "tone-mapped to BT.709 SDR" in result.stderr
    y, frame = luma_plane(out)
    assert (frame.color_primaries, frame.color_trc, frame.colorspace) == (1, 1, 1)
    assert HdrMetadata.from_frame(frame) is None
    from vidup.video.hdr import ToneMapToSdr

    with av.open(str(clip)) as c:  # the same steps on the source frame: PQ -> light -> curve -> BT.709 gamma
        source = next(c.decode(video=0)).to_ndarray(format="rgb48le", src_colorspace="BT2020")
        expected = ToneMapToSdr(16, 203.0, 1000.0)(source).astype(float)
    with av.open(str(out)) as c:
        got = next(c.decode(video=0)).to_ndarray(format="rgb48le", src_colorspace="ITU709").astype(float)
    got = got.reshape(64, 2, 128, 2, 3).mean((1, 3))
    assert np.abs(got.mean((0, 1)) - expected.mean((0, 1))).max() / 65535 < 0.03


def test_pq_display_working_space_round_trips(tmp_path, cli):
    clip = hdr_clip(tmp_path / "hdr.mp4")
    outs = {}
    for working in ("code", "display"):
        outs[working] = tmp_path / f"{working}.mp4"
        assert cli(clip, outs[working], "--scale", "2", "--pq-working", working, "-q").exit_code == 0
    code, _ = luma_plane(outs["code"])
    display, frame = luma_plane(outs["display"])
    assert frame.color_trc == 16
    assert abs(code.astype(float).mean() - display.astype(float).mean()) < 8  # same picture, back in PQ codes


# --- aspect -------------------------------------------------------------------------------------------------


def test_anamorphic_input_becomes_square_pixels_at_its_display_aspect(tmp_path, cli):
    clip = anamorphic_clip(tmp_path / "sd.mp4")
    assert probe(clip).source.sample_aspect == Fraction(16, 11)
    out = tmp_path / "square.mp4"
    result = cli(clip, out, "--size", "256")
    assert result.exit_code == 0 and "anamorphic source" in result.stderr
    info = probe(out)
    assert (info.width, info.height) == (256, 144) and info.source.sample_aspect == 1


def test_keep_sar_carries_the_sample_aspect(tmp_path, cli):
    clip = anamorphic_clip(tmp_path / "sd.mp4")
    out = tmp_path / "sar.mp4"
    assert cli(clip, out, "--size", "256", "--keep-sar", "-q").exit_code == 0
    info = probe(out)
    assert info.source.sample_aspect == Fraction(16, 11)
    assert info.width * info.source.sample_aspect / info.height == pytest.approx(16 / 9, rel=0.02)


# --- every stream -------------------------------------------------------------------------------------------


def test_timecode_track_survives_and_follows_a_trim(tmp_path, cli):
    clip = timecode_clip(tmp_path / "tc.mov")
    assert probe(clip).source.timecode == "10:00:00:00"
    whole, trimmed = tmp_path / "whole.mov", tmp_path / "trim.mov"
    assert cli(clip, whole, "--size", "128", "-q").exit_code == 0
    assert cli(clip, trimmed, "--size", "128", "--start", "5", "-q").exit_code == 0
    assert probe(whole).source.timecode == "10:00:00:00"
    assert probe(trimmed).source.timecode == "10:00:00:05"
    assert [s.type for s in probe(whole).streams].count("data") == 1  # one timecode track, not two


def test_attachments_are_copied_and_mp4_names_mkv(tmp_path, cli):
    clip = mkv_with_attachment(tmp_path / "font.mkv")
    out = tmp_path / "up.mkv"
    assert cli(clip, out, "--size", "128", "-q").exit_code == 0
    with av.open(str(out)) as c:
        (attachment,) = [s for s in c.streams if s.type == "attachment"]
        assert (attachment.name, attachment.mimetype, bytes(attachment.data)) == (
            "ScoreboardSans.ttf",
            "font/ttf",
            FONT,
        )
    result = cli(clip, tmp_path / "up.mp4", "--size", "128")
    assert result.exit_code == 2 and "attachment" in result.stderr and ".mkv" in result.stderr
    assert not (tmp_path / "up.mp4").exists() and not list(tmp_path.glob(".up.*"))


def test_data_streams_are_copied_byte_for_byte(tmp_path, cli):
    clip = klv_ts(tmp_path / "klv.ts")
    out = tmp_path / "up.ts"
    assert cli(clip, out, "--size", "128", "-q").exit_code == 0
    assert [p for _, p in packets(out, "data")] == [p for _, p in packets(clip, "data")] != []


def test_ts_output_holds_h264_and_audio(tmp_path, cli):
    clip = make_clip(tmp_path / "in.mp4", frames=10)
    out = tmp_path / "up.ts"
    result = cli(clip, out, "--size", "128", "-q")
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and sum(1 for _ in c.decode(video=0)) == 10
    adts = lambda payload: payload[7:] if payload[:2] == b"\xff\xf1" else payload  # noqa: E731
    assert [adts(p) for _, p in packets(out, "audio")] == [p for _, p in packets(clip, "audio")]  # TS wraps AAC


# --- damaged and odd timing -----------------------------------------------------------------------------------


def test_damaged_ts_fails_with_the_frame_count_or_is_skipped_with_counts(tmp_path, cli):
    clip = damaged_ts(tmp_path / "damaged.ts")
    out = tmp_path / "up.mp4"
    result = cli(clip, out, "--size", "128", "-q")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("vidup: error:")
    assert "decoded frames" in lines[0] and "--on-decode-error skip" in lines[0]
    assert list(tmp_path.iterdir()) == [clip]
    result = cli(clip, out, "--size", "128", "-q", "--on-decode-error", "skip")
    assert result.exit_code == 0 and "Traceback" not in result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("vidup: warning:")]
    assert len(warning) == 1 and ("damaged" in warning[0] or "lost" in warning[0])
    kept = len(frame_times(out))
    lost = sum(
        int(word)
        for word, after in zip(warning[0].split(), warning[0].split()[1:])
        if word.isdigit() and after == "frames"
    )
    assert kept + lost == 50 or kept == 50, (kept, warning[0])


def test_wrapped_clock_keeps_every_frame(tmp_path, cli):
    clip = wrapped_ts(tmp_path / "wrap.ts")
    assert probe(clip).start_time == pytest.approx(-1.0, abs=0.01)
    out = tmp_path / "up.mp4"
    result = cli(clip, out, "--size", "128", "-q")
    assert result.exit_code == 0 and "timestamps shifted by +0.99" in result.stderr
    times = frame_times(out)
    assert len(times) == 50 and times[0] == 0.0  # before, the edit list hid the first 25


def test_resolution_change_midstream_is_scaled_with_a_warning(tmp_path, cli):
    clip = resolution_change_ts(tmp_path / "switch.ts")
    out = tmp_path / "up.mp4"
    result = cli(clip, out, "--size", "128", "-q")
    assert result.exit_code == 0 and "10 frames of another size scaled" in result.stderr
    with av.open(str(out)) as c:
        sizes = {(f.width, f.height) for f in c.decode(video=0)}
    assert sizes == {(128, 96)} and len(frame_times(out)) == 20


def test_duplicate_timestamps_are_repaired_monotonically(tmp_path, cli):
    clip = duplicate_pts_mkv(tmp_path / "dup.mkv")
    out = tmp_path / "up.mkv"
    result = cli(clip, out, "--size", "128", "-q")
    assert result.exit_code == 0 and "1 out-of-order or duplicate timestamps repaired" in result.stderr
    times = frame_times(out)
    assert len(times) == 10 and all(b > a for a, b in zip(times, times[1:]))


def test_truncated_ts_is_detected(tmp_path, cli):
    clip = ts_clip(tmp_path / "full.ts", frames=50)
    cut = tmp_path / "cut.ts"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2 + 77])
    result = cli(cut, tmp_path / "up.mp4", "--size", "128", "-q")
    assert result.exit_code == 2 and "truncated" in result.stderr
    result = cli(cut, tmp_path / "up.mp4", "--size", "128", "-q", "--on-decode-error", "skip")
    assert result.exit_code == 0 and "incomplete input" in result.stderr


# --- trims --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start,end", [("1.0s", "2.0s"), ("25", "50")])
def test_trims_of_a_ts_are_frame_accurate(tmp_path, cli, start, end):
    clip = ts_clip(tmp_path / "gop.ts", frames=75, gop=25)
    out = tmp_path / "trim.mp4"
    assert cli(clip, out, "--scale", "1", "--start", start, "--end", end, "-q").exit_code == 0
    times = frame_times(out)
    assert len(times) == 25 and times[0] == 0.0
    first, sources = gray_frames(out)[0].astype(int), gray_frames(clip)
    distance = [np.abs(first - sources[i]).mean() for i in range(20, 31)]
    assert int(np.argmin(distance)) + 20 == 25  # the first frame kept is frame 25, not a GOP later
    audio = packets(out, "audio")
    assert audio and abs(audio[0][0]) <= 40_000  # audio starts with the video, within a frame


# --- colour -------------------------------------------------------------------------------------------------


def test_sr_keeps_flat_colours(sr_engine):
    bars = colour_bars(128, 72)
    out = sr_engine.upscale(bars, (512, 288)).image
    edges = np.linspace(0, 512, 8).round().astype(int)
    for x0, x1 in zip(edges[:-1], edges[1:]):
        patch = out[100:188, x0 + 24 : x1 - 24].reshape(-1, 3).mean(0)
        source = bars[36, (x0 + x1) // 8]
        assert np.abs(patch - source).max() <= 3, (patch, source)
    sr_engine.color_anchor = False
    try:
        raw = sr_engine.upscale(bars, (512, 288)).image
    finally:
        sr_engine.color_anchor = True
    deviation = max(
        np.abs(raw[100:188, x0 + 24 : x1 - 24].reshape(-1, 3).mean(0) - bars[36, (x0 + x1) // 8]).max()
        for x0, x1 in zip(edges[:-1], edges[1:])
    )
    assert deviation > 20  # what the model does alone: the green bar comes out at ~224


# --- plain errors ---------------------------------------------------------------------------------------------


def test_an_unwritable_output_path_is_one_line(tmp_path, cli):
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli(clip, blocker / "out.mp4", "--size", "128")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("vidup: error:")


@pytest.mark.slow
def test_a_full_disk_is_one_line_leaves_no_output_and_resumes(tmp_path, sample):
    import resource
    import signal

    def limit_file_size():  # writes past 100 kB fail as on a full disk (EFBIG), for root too
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "vidup", "upscale", str(sample), str(out_dir / "up.mp4"), "-q", "--end", "40"],
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidup: error: writing") and "Traceback" not in proc.stderr
    assert "rerun the same command to resume" in lines[0]
    job = out_dir / ".up.mp4.vidup"
    assert [p.name for p in out_dir.iterdir()] == [job.name]  # no output, no temporary file
    assert [p.name for p in job.iterdir()] == ["manifest.json"]  # consistent: no half-written segment
    # Space freed: the same command resumes and finishes.
    proc = subprocess.run(
        [sys.executable, "-m", "vidup", "upscale", str(sample), str(out_dir / "up.mp4"), "--end", "40"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "resuming: 0 of 1 segments done" in proc.stderr, proc.stderr
    assert [p.name for p in out_dir.iterdir()] == ["up.mp4"]


def test_a_stale_temporary_file_is_removed_with_a_note(tmp_path, cli):
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    stale = tmp_path / ".out.4000000-deadbeef.part.mp4"  # no process has that id
    stale.write_bytes(b"half a file")
    result = cli(clip, tmp_path / "out.mp4", "--size", "128")
    assert result.exit_code == 0 and "left by an interrupted run" in result.stderr and not stale.exists()


def test_frames_too_small_for_optical_flow_run_without_temporal(tmp_path, cli):
    clip = make_clip(tmp_path / "tiny.mkv", frames=4, size=(8, 8))
    result = cli(clip, tmp_path / "up.mkv", "--size", "32")
    assert result.exit_code == 0 and "too small for optical flow" in result.stderr
    assert len(frame_times(tmp_path / "up.mkv")) == 4


@pytest.mark.parametrize("args", [("-", "out.mp4"), ("in.mp4", "-")])
def test_stdin_and_stdout_point_to_filter_mode(tmp_path, cli, args):
    make_clip(tmp_path / "in.mp4", frames=2)
    os.chdir(tmp_path)
    result = cli(*args)
    assert result.exit_code == 2 and "vidup filter" in result.stderr


# --- pipes --------------------------------------------------------------------------------------------------


def test_filter_carries_ten_bit_y4m(sr_engine):
    from broadcast_media import ramp_frame

    from vidup import Upscaler, load_config
    from vidup.filter import run_filter

    buf = io.BytesIO()  # FFmpeg writes C420p10 only with -strict -1, as `ffmpeg -strict -1 -f yuv4mpegpipe` does
    with av.open(buf, "w", format="yuv4mpegpipe", container_options={"strict": "-1"}) as out:
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 64, "yuv420p10le"
        for i in range(2):
            frame = ramp_frame(256, 64, 400, 420, 10)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buf.getvalue()
    assert data.startswith(b"YUV4MPEG2 W256 H64") and b"C420p10" in data.split(b"\n")[0]
    stdout = io.BytesIO()
    config = load_config(overrides={"scale": 1, "quiet": True})  # scale 1: frames pass the engine untouched
    assert run_filter(io.BytesIO(data), stdout, config, upscaler=Upscaler(config, sr_engine)) == 2
    header, _, body = stdout.getvalue().partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 W256 H64") and b"C420p10" in header
    y = np.frombuffer(body[len(b"FRAME\n") :][: 256 * 64 * 2], "<u2").reshape(64, 256)
    source = np.frombuffer(ramp_frame(256, 64, 400, 420, 10).planes[0], "<u2").reshape(64, -1)[:, :256]
    assert np.array_equal(y, source)  # 21 codes in, the same 21 codes out


def test_container_tags_and_chapters_are_kept_and_follow_a_trim(tmp_path, cli):
    clip = make_clip(tmp_path / "in.mkv", frames=25)
    with av.open(str(clip)) as src, av.open(str(tmp_path / "tagged.mkv"), "w") as out:
        video = out.add_stream_from_template(src.streams.video[0])
        out.metadata["title"] = "Cup final highlights"
        out.set_chapters(
            [
                {"id": 1, "start": 0, "end": 4, "time_base": Fraction(1, 10), "metadata": {"title": "Kick-off"}},
                {"id": 2, "start": 4, "end": 10, "time_base": Fraction(1, 10), "metadata": {"title": "Goal"}},
            ]
        )
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = video
                out.mux(packet)
    tagged = tmp_path / "tagged.mkv"
    whole, trimmed = tmp_path / "whole.mkv", tmp_path / "trim.mkv"
    assert cli(tagged, whole, "--size", "128", "-q").exit_code == 0
    assert cli(tagged, trimmed, "--size", "128", "--start", "0.6s", "-q").exit_code == 0
    with av.open(str(whole)) as c:
        assert c.metadata.get("title") == "Cup final highlights"
        assert [(ch["metadata"]["title"], round(float(ch["start"] * ch["time_base"]), 3)) for ch in c.chapters()] == [
            ("Kick-off", 0.0),
            ("Goal", 0.4),
        ]
    with av.open(str(trimmed)) as c:  # the trim starts inside "Goal": only it is left, from zero
        assert [
            (
                ch["metadata"]["title"],
                round(float(ch["start"] * ch["time_base"]), 3),
                round(float(ch["end"] * ch["time_base"]), 3),
            )
            for ch in c.chapters()
        ] == [("Goal", 0.0, 0.4)]


@pytest.mark.parametrize(
    "codec,depth,chroma,expected,lost",
    [
        ("libx264", 12, "420", "yuv420p10le", "stores at most 10 bits"),
        ("libx265", 12, "422", "yuv422p12le", None),
        ("prores_ks", 8, "420", "yuv422p10le", None),
        ("libx264", 8, "444", "yuv444p", None),
    ],
)
def test_pixel_format_choice_keeps_what_the_codec_can(codec, depth, chroma, expected, lost):
    from vidup.video.describe import choose_pix_fmt

    pix_fmt, notes = choose_pix_fmt(codec, depth, chroma, None)
    assert pix_fmt == expected and (lost in " ".join(notes) if lost else notes == [])


def nvenc_opens(codec: str) -> bool:
    """Whether this machine can open the NVIDIA encoder (a driver and a GPU), tried directly through PyAV."""
    from fractions import Fraction

    try:
        context = av.CodecContext.create(codec, "w")
        context.width, context.height, context.pix_fmt = 256, 144, "yuv420p"
        context.time_base = Fraction(1, 25)
        context.open()
        return True
    except Exception:
        return False


@pytest.mark.parametrize("codec", ["h264_nvenc", "hevc_nvenc"])
def test_nvenc_is_a_clear_error_before_any_model_loads_where_it_cannot_open(tmp_path, sr_engine, codec):
    """Without an NVIDIA GPU: one line before any model loads. With one (checked, not assumed): it encodes."""
    loaded = []

    def factory(config):
        loaded.append(config.output.codec)
        return sr_engine

    clip = make_clip(tmp_path / "in.mp4", frames=2)
    result = CliRunner().invoke(
        main,
        ["upscale", str(clip), str(tmp_path / "out.mp4"), "--codec", codec, "-q", "--size", "256"],
        obj={"engine_factory": factory},
    )
    if nvenc_opens(codec):
        assert result.exit_code == 0 and loaded == [codec] and (tmp_path / "out.mp4").exists()
        return
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "needs an NVIDIA GPU" in lines[0] and "libx264" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"] and not loaded


def test_nvenc_takes_its_own_ten_bit_layout():
    from vidup.video.describe import choose_pix_fmt

    assert choose_pix_fmt("hevc_nvenc", 10, "420", None) == ("p010le", [])
    assert choose_pix_fmt("h264_nvenc", 8, "420", None) == ("yuv420p", [])
