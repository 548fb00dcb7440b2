"""The CLI end to end, and the bad-input matrix: typed error, one line on stderr, non-zero exit, no output."""

import subprocess
import sys

import av
import numpy as np
import pytest
from click.testing import CliRunner

from vidup.cli import main
from vidup.errors import (
    InputNotFoundError,
    NotAVideoError,
    NoVideoStreamError,
    OutputPathError,
    TruncatedInputError,
)
from media import frame_times, make_clip, packets


ENGINE: dict = {}  # the engine factory the CLI is given (monkeypatch.setitem: restored after each test)


def run_cli(*args):
    return CliRunner().invoke(
        main, [str(a) for a in args], catch_exceptions=False, obj={"engine_factory": ENGINE.get("factory")}
    )


def no_model(config):
    raise AssertionError("a model was loaded")


@pytest.mark.slow
def test_upscale_the_sample_end_to_end(tmp_path, sample, sr_engine, monkeypatch):
    monkeypatch.setitem(ENGINE, "factory", lambda config: sr_engine)
    out = tmp_path / "up.mp4"
    result = run_cli("upscale", sample, out, "--end", "30")
    assert result.exit_code == 0, result.output
    assert "frame/s" in result.stderr and "wrote" in result.stderr
    assert result.stderr.count("frame/s") <= 3  # not a terminal: no redraw per frame flooding the log
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (1024, 576)
        assert sum(1 for _ in c.decode(video=0)) == 30
    assert frame_times(out) == frame_times(sample)[:30]
    src_audio = [p for p in packets(sample, "audio") if p[0] < 1_200_000]
    assert packets(out, "audio")[: len(src_audio) - 1] == src_audio[:-1]


def test_quiet_prints_nothing(tmp_path, sr_engine, monkeypatch):
    monkeypatch.setitem(ENGINE, "factory", lambda config: sr_engine)
    clip = make_clip(tmp_path / "in.mp4", frames=4, size=(96, 64))
    result = run_cli("upscale", clip, tmp_path / "out.mp4", "--quiet", "--size", "256")
    assert result.exit_code == 0 and result.stderr == "" and result.stdout == ""


def test_display_rotation_is_kept(tmp_path, sr_engine, monkeypatch):
    from vidup.video import probe

    monkeypatch.setitem(ENGINE, "factory", lambda config: sr_engine)
    clip = make_clip(tmp_path / "phone.mp4", frames=4, rotation=90)
    assert probe(clip).rotation == 90
    out = tmp_path / "phone_up.mp4"
    assert run_cli("upscale", clip, out, "-q", "--size", "128").exit_code == 0
    info = probe(out)
    assert info.rotation == 90 and (info.width, info.height) == (128, 96)  # stored size, same turn on display


def test_odd_input_size(tmp_path, sr_engine, monkeypatch):
    monkeypatch.setitem(ENGINE, "factory", lambda config: sr_engine)
    clip = make_clip(tmp_path / "odd.mkv", frames=5, size=(175, 99), subtitles=True)
    out = tmp_path / "odd_up.mkv"
    assert run_cli("upscale", clip, out, "-q").exit_code == 0
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (1024, 580)  # 1024 * 99 / 175, even
        assert len(c.streams.subtitles) == 1 and len(c.streams.audio) == 1
    assert frame_times(out) == frame_times(clip)


def test_size_and_scale_flags(tmp_path, sr_engine, monkeypatch):
    monkeypatch.setitem(ENGINE, "factory", lambda config: sr_engine)
    clip = make_clip(tmp_path / "in.mp4", frames=2, size=(64, 48))
    for flags, expected in [
        (["--size", "320x240"], (320, 240)),
        (["--scale", "2"], (128, 96)),
        (["--size", "200"], (200, 150)),
    ]:
        out = tmp_path / f"out_{expected[0]}.mp4"
        assert run_cli("upscale", clip, out, "-q", *flags).exit_code == 0
        with av.open(str(out)) as c:
            assert (c.streams.video[0].width, c.streams.video[0].height) == expected


def _audio_only(path):
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=48000, layout="stereo")
        for i in range(0, 48000, 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            f.sample_rate, f.pts = 48000, i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


def _bad_inputs(tmp_path):
    good = make_clip(tmp_path / "good.mp4", frames=10)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"precious")
    return {
        "missing": ([tmp_path / "nope.mp4", tmp_path / "o1.mp4"], InputNotFoundError),
        "not a video": ([text, tmp_path / "o2.mp4"], NotAVideoError),
        "no video stream": ([_audio_only(tmp_path / "song.m4a"), tmp_path / "o3.mp4"], NoVideoStreamError),
        "truncated": ([cut, tmp_path / "o4.mp4"], TruncatedInputError),
        "output is input": ([good, good], OutputPathError),
        "output exists": ([good, existing], OutputPathError),
    }


def test_the_engine_seam_is_what_loads_the_model(tmp_path, monkeypatch):
    """The guard the bad-input tests rely on: with good input, the factory given to the CLI is called."""
    monkeypatch.setitem(ENGINE, "factory", no_model)
    with pytest.raises(AssertionError, match="a model was loaded"):
        run_cli("upscale", make_clip(tmp_path / "good.mp4", frames=2), tmp_path / "out.mp4", "-q")


def test_bad_inputs_fail_cleanly_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(ENGINE, "factory", no_model)
    before = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    for case, (args, error) in _bad_inputs(tmp_path).items():
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        result = run_cli("upscale", *args)
        assert result.exit_code == error.exit_code == 2, case
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vidup: error:"), (case, result.stderr)
        assert "Traceback" not in result.output
        after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        assert after == before, f"{case}: files changed"


@pytest.mark.slow
def test_bad_input_through_the_console_script(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vidup.cli", "upscale", str(tmp_path / "x.mp4"), str(tmp_path / "y.mp4")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"vidup: error: input not found: {tmp_path / 'x.mp4'}"


def test_corrupt_clip_midway_fails_and_writes_nothing_unless_asked(tmp_path, sr_engine, monkeypatch):
    monkeypatch.setitem(ENGINE, "factory", lambda config: sr_engine)
    clip = make_clip(tmp_path / "in.mkv", frames=40)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    result = run_cli("upscale", cut, tmp_path / "out.mkv", "-q", "--size", "128")
    assert result.exit_code == 2 and "frames decoded" in result.stderr
    assert not (tmp_path / "out.mkv").exists()
    result = run_cli("upscale", cut, tmp_path / "out.mkv", "-q", "--size", "128", "--on-decode-error", "skip")
    assert result.exit_code == 0
    assert 0 < len(frame_times(tmp_path / "out.mkv")) < 40


TERMINATED_RUN = """
import signal, sys
from vidup.cli import main
from vidup.testing import EngineFactory
main(sys.argv[1:], obj={"engine_factory": EngineFactory(kill_after=10, kill_signal=signal.SIGTERM)})
"""


@pytest.mark.slow
def test_sigterm_midway_exits_143_and_leaves_no_output(tmp_path, sample):
    """SIGTERM arrives at frame 10, sent by the engine itself: deterministic, no polling for a moment to send it."""
    import signal

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", TERMINATED_RUN, "upscale", str(sample), str(out_dir / "up.mp4"), "-q", "--size", "256"],
        capture_output=True,
        timeout=300,
    )
    stderr = proc.stderr
    assert proc.returncode == 128 + signal.SIGTERM, stderr.decode()
    assert b"interrupted; no output was written" in stderr and b"rerun the same command to resume" in stderr
    assert b"Traceback" not in stderr
    # No output and no temporary file: only the job folder, with its manifest, for a resume.
    job = out_dir / ".up.mp4.vidup"
    assert [p.name for p in out_dir.iterdir()] == [job.name]
    assert [p.name for p in job.iterdir()] == ["manifest.json"]


def test_engine_failure_midway_leaves_no_output_only_the_job_folder(tmp_path, sr_engine, monkeypatch):
    class Failing:
        name = "failing"
        calls = 0

        def upscale(self, frame, size, prior=None):
            Failing.calls += 1
            if Failing.calls == 4:
                raise RuntimeError("injected failure")
            return sr_engine.upscale(frame, size, prior)

    monkeypatch.setitem(ENGINE, "factory", lambda config: Failing())
    clip = make_clip(tmp_path / "in.mp4", frames=10)
    with pytest.raises(RuntimeError, match="injected"):
        run_cli("upscale", clip, tmp_path / "out.mp4", "-q", "--size", "128")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.mp4.vidup", "in.mp4"]
    assert [p.name for p in (tmp_path / ".out.mp4.vidup").iterdir()] == ["manifest.json"]


def test_bad_settings_are_config_errors(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    for flags in (["--size", "huge"], ["--crf", "99"], ["--size", "512", "--scale", "2"], ["--tile", "3"]):
        result = run_cli("upscale", clip, tmp_path / "o.mp4", *flags)
        assert result.exit_code == 2 and result.stderr.startswith("vidup: error:"), flags


def test_models_and_version():
    result = run_cli("models")
    assert result.exit_code == 0
    assert "clear-reality-x4" in result.output and "realesrgan-x4plus" in result.output and "BSD-3" in result.output
    assert run_cli("--version").output.strip().startswith("vidup, version 0.1.0")


def test_no_temporal_flag_turns_seeding_off(tmp_path):
    from vidup.cli import build_config

    assert build_config(temporal=False).temporal.enabled is False
    assert build_config().temporal.enabled is True
