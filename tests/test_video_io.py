"""Reader/writer round trips: frames, timestamps, passthrough streams, atomic output."""

from fractions import Fraction

import av
import numpy as np
import pytest

from vidup.config import OutputConfig
from vidup.errors import CorruptInputError, OutputPathError, UnsupportedStreamError
from vidup.video.timing import Position
from vidup.video.reader import VideoReader, probe
from vidup.video.writer import VideoWriter
from media import decoded, frame_times, make_clip, packets


def describe(info, output=OutputConfig(), scale=1):
    from dataclasses import replace

    from vidup.config import load_config
    from vidup.video.describe import describe_output

    config = load_config(overrides={"scale": scale, "output.codec": output.codec})
    description = describe_output(info.source, config, output.codec)
    return replace(description, width=info.width * scale, height=info.height * scale)


def copy_through_writer(src, dst, output=OutputConfig(), scale=1, window=None, start=None, end=None):
    info = probe(src)
    description = describe(info, output, scale)
    with VideoWriter(dst, description, output, source=info, window=window) as writer:
        for frame in VideoReader(src, info, description=description).frames(start, end):
            rgb = np.repeat(np.repeat(frame.rgb, scale, 0), scale, 1)
            writer.write(rgb, frame.pts, frame.time_base)
    return writer


def test_probe_reports_the_clip(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=10, size=(64, 48), subtitles=True, rate=30)
    info = probe(clip)
    assert (info.width, info.height) == (64, 48)
    assert info.frame_rate == Fraction(30) and isinstance(info.frame_rate, Fraction)
    assert info.duration == pytest.approx(10 / 30, abs=0.02)
    assert [s.type for s in info.streams] == ["video", "audio", "subtitle"]
    audio, subs = info.streams[1], info.streams[2]
    assert audio.language == "fra" and audio.codec == "aac"
    assert subs.language == "eng" and "forced" in subs.disposition and subs.codec == "subrip"
    assert info.rotation == 0 and info.source.colour.matrix in (0, 1, 2)


def test_round_trip_keeps_frames_pts_audio_and_subtitles(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=20, size=(64, 48), subtitles=True)
    dst = tmp_path / "out.mkv"
    writer = copy_through_writer(src, dst, scale=2)
    assert writer.frames_written == 20
    assert frame_times(dst) == frame_times(src)
    assert packets(dst, "audio") == packets(src, "audio")  # byte-identical, same timestamps
    assert packets(dst, "subtitle") == packets(src, "subtitle")
    out = probe(dst)
    assert (out.width, out.height) == (128, 96)
    subs = [s for s in out.streams if s.type == "subtitle"][0]
    assert subs.language == "eng" and "forced" in subs.disposition
    assert [s for s in out.streams if s.type == "audio"][0].language == "fra"
    # the content survived too (lossy codec, so approximately)
    first_in, first_out = decoded(src)[0], decoded(dst)[0]
    assert np.abs(first_out[::2, ::2].astype(int) - first_in).mean() < 6


def test_every_audio_track_is_copied_with_language_and_disposition(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=15, commentary="spa")
    dst = tmp_path / "out.mp4"
    copy_through_writer(src, dst, scale=2)
    audio = [s for s in probe(dst).streams if s.type == "audio"]
    assert [s.language for s in audio] == ["fra", "spa"]
    assert "comment" in audio[1].disposition and "comment" not in audio[0].disposition
    for nth in (0, 1):
        assert packets(dst, "audio", nth) == packets(src, "audio", nth) != []
    assert packets(src, "audio", 0) != packets(src, "audio", 1)  # two different tracks, not one copied twice


def test_variable_frame_rate_gaps_survive(tmp_path):
    pts = [0, 40, 80, 200, 240, 500, 540, 580]  # ms: two gaps
    src = make_clip(tmp_path / "vfr.mp4", pts=pts, time_base=Fraction(1, 1000), size=(64, 48))
    dst = tmp_path / "out.mp4"
    copy_through_writer(src, dst)
    assert frame_times(dst) == [t / 1000 for t in pts]
    assert packets(dst, "audio") == packets(src, "audio")


@pytest.mark.parametrize("codec,suffix", [("libx265", ".mp4"), ("prores_ks", ".mov"), ("ffv1", ".mkv")])
def test_other_codecs(tmp_path, codec, suffix):
    src = make_clip(tmp_path / "in.mp4", frames=6, size=(64, 48))
    dst = tmp_path / f"out{suffix}"
    copy_through_writer(src, dst, output=OutputConfig(codec=codec))
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.name in (codec, "prores", "hevc")
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_codec_the_container_cannot_hold_is_refused_early(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    with pytest.raises(UnsupportedStreamError, match=".mkv or .mov"):
        copy_through_writer(src, tmp_path / "out.mp4", output=OutputConfig(codec="prores_ks"))
    assert list(tmp_path.iterdir()) == [src]  # no output, no temporary file


def test_subtitles_that_mp4_cannot_hold_are_an_error_not_a_loss(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=3, subtitles=True)
    with pytest.raises(UnsupportedStreamError, match="subtitle"):
        copy_through_writer(src, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_failure_midway_leaves_no_file(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=10)
    dst = tmp_path / "out.mp4"
    info = probe(src)
    with pytest.raises(RuntimeError):
        with VideoWriter(dst, describe(info), OutputConfig(), source=info) as writer:
            for frame in VideoReader(src, info).frames():
                if frame.index == 5:
                    raise RuntimeError("injected")
                writer.write(frame.rgb, frame.pts, frame.time_base)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_window_trims_and_shifts_video_and_audio(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=25, size=(64, 48))
    dst = tmp_path / "out.mkv"
    copy_through_writer(src, dst, window=(0.4, 0.8), start=Position.parse("0.4s"), end=Position.parse("0.8s"))
    times = frame_times(dst)
    assert len(times) == 10 and times[0] == pytest.approx(0.0, abs=1e-3)
    audio = packets(dst, "audio")
    assert audio and audio[0][0] >= -30_000 and audio[-1][0] < 400_000 + 30_000


def test_start_by_frame_index_and_time(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=30, size=(64, 48))
    by_index = list(VideoReader(src).frames(Position.parse("12"), Position.parse("15")))
    by_time = list(VideoReader(src).frames(Position.parse("0.48s"), Position.parse("0.6s")))
    assert [f.index for f in by_index] == [12, 13, 14] == [f.index for f in by_time]
    assert [f.pts for f in by_index] == [f.pts for f in by_time]


def test_positions_parse():
    assert Position.parse("120") == Position(frame=120)
    assert Position.parse("4.8s") == Position(seconds=4.8)
    assert Position.parse("1:02.5") == Position(seconds=62.5)
    assert Position.parse("00:01:02.5") == Position(seconds=62.5)
    from vidup.errors import ConfigError

    with pytest.raises(ConfigError):
        Position.parse("soon")


def test_truncated_matroska_fails_with_frame_count(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=50)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptInputError) as err:
        list(VideoReader(cut).frames())
    assert 0 < err.value.frames_decoded < 50 and "frames decoded" in str(err.value)
    reader = VideoReader(cut, on_decode_error="skip")
    assert 0 < len(list(reader.frames())) < 50 and reader.incomplete


def test_existing_output_needs_overwrite(tmp_path):
    from vidup.video.writer import check_output_path

    src = make_clip(tmp_path / "in.mp4", frames=2)
    (tmp_path / "out.mp4").write_bytes(b"keep me")
    with pytest.raises(OutputPathError, match="--overwrite"):
        check_output_path(tmp_path / "out.mp4", src, overwrite=False)
    check_output_path(tmp_path / "out.mp4", src, overwrite=True)
    with pytest.raises(OutputPathError, match="is the input"):
        check_output_path(tmp_path / "." / "in.mp4", src, overwrite=True)


def test_output_gets_the_usual_file_mode(tmp_path):
    import os

    src = make_clip(tmp_path / "in.mp4", frames=2)
    copy_through_writer(src, tmp_path / "out.mp4")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.mp4").stat().st_mode & 0o777 == 0o666 & ~umask
