import numpy as np
import pytest

from vidup.config import load_config
from vidup.engines.sr import SREngine, tile_boxes
from media import decoded


def test_tile_boxes_cover_without_gaps():
    for length, tile in [(100, 32), (99, 100), (385, 384), (7, 3)]:
        boxes = tile_boxes(length, tile)
        assert boxes[0][0] == 0 and boxes[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(boxes, boxes[1:]))
        assert all(0 < e - s <= tile for s, e in boxes)


def test_engine_output_has_target_size_and_stages(sr_engine, sample):
    frame = decoded(sample)[5]
    result = sr_engine.upscale(frame, (1024, 576))
    out = result.image
    assert out.shape == (576, 1024, 3) and out.dtype == np.uint8
    names = [s.name for s in result.stages()]
    assert names == ["clear-reality-x4 x4", "resized to target", "colour anchored to input"]
    assert result.stages()[0].image.shape == (576, 1024, 3)


def test_tiled_output_matches_whole_frame(sample):
    frame = decoded(sample)[20]
    whole = SREngine.from_config(load_config(overrides={"sr.tile": 0, "precision": "fp32"})).super_resolve(frame)
    tiled = SREngine.from_config(
        load_config(overrides={"sr.tile": 64, "sr.tile_pad": 16, "precision": "fp32"})
    ).super_resolve(frame)
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.mean() < 0.1 and np.percentile(diff, 99.9) <= 3


def test_frames_larger_than_target_skip_the_network(sr_engine):
    frame = np.full((600, 800, 3), 90, np.uint8)
    result = sr_engine.upscale(frame, (512, 384))
    assert result.image.shape == (384, 512, 3) and result.stages()[0].name.startswith("resize")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_precisions_agree(precision, sample):
    frame = decoded(sample)[50][:64, :64]
    ref = SREngine.from_config(load_config(overrides={"precision": "fp32"})).super_resolve(frame)
    out = SREngine.from_config(load_config(overrides={"precision": precision})).super_resolve(frame)
    assert np.abs(ref.astype(int) - out.astype(int)).mean() < 1.0
