"""Reader for ncnn model files (`.param` graph + `.bin` weights), so bundled ncnn models load into PyTorch.

Only the graph structure and weight blobs are read; nothing here runs a graph. Layers are kept in file order,
which for converter-made models is the order the original PyTorch forward pass executed them. The loaders in
`sr_archs` rely on that to map convolution weights onto modules by call order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidup.errors import ModelFormatError

PARAM_MAGIC = 7767517
FP16_TAG = 0x01306B47
FP32_TAG = 0x00000000


@dataclass
class NcnnLayer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, object]
    blobs: dict[str, np.ndarray] = field(default_factory=dict)


def _parse_value(text: str) -> object:
    if "." in text or "e" in text.lower():
        return float(text)
    return int(text)


def _parse_params(tokens: list[str]) -> dict[int, object]:
    params: dict[int, object] = {}
    for token in tokens:
        key_text, value_text = token.split("=", 1)
        key = int(key_text)
        if key <= -23300:  # array parameter: "-233xx=count,v1,v2,..." stores key xx
            values = [_parse_value(v) for v in value_text.split(",")]
            params[-key - 23300] = values[1:]
        else:
            params[key] = _parse_value(value_text)
    return params


def parse_param(text: str) -> list[NcnnLayer]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != str(PARAM_MAGIC):
        raise ModelFormatError("not an ncnn .param file (bad magic number)")
    layer_count, _blob_count = (int(v) for v in lines[1].split())
    layers = []
    for line in lines[2 : 2 + layer_count]:
        tokens = line.split()
        layer_type, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        inputs = tokens[4 : 4 + n_in]
        outputs = tokens[4 + n_in : 4 + n_in + n_out]
        layers.append(NcnnLayer(layer_type, name, inputs, outputs, _parse_params(tokens[4 + n_in + n_out :])))
    return layers


class _BinCursor:
    def __init__(self, data: bytes):
        self.data = data
        self.offset = 0

    def raw_fp32(self, count: int) -> np.ndarray:
        end = self.offset + 4 * count
        if end > len(self.data):
            raise ModelFormatError("ncnn .bin file ends before all weights were read")
        array = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.offset).copy()
        self.offset = end
        return array

    def tagged(self, count: int) -> np.ndarray:
        """A weight block with a 4-byte storage tag in front (fp16 or fp32)."""
        (tag,) = struct.unpack_from("<I", self.data, self.offset)
        self.offset += 4
        if tag == FP16_TAG:
            end = self.offset + 2 * count
            array = np.frombuffer(self.data, dtype="<f2", count=count, offset=self.offset).astype(np.float32)
            # fp16 blocks are padded to a 4-byte boundary.
            self.offset = end + (-end % 4)
            return array
        if tag == FP32_TAG:
            return self.raw_fp32(count)
        raise ModelFormatError(f"unsupported ncnn weight storage tag 0x{tag:08x} (quantised models are not supported)")


def _read_blobs(layer: NcnnLayer, cursor: _BinCursor) -> None:
    p = layer.params
    if layer.type == "Convolution":
        out_ch, kernel_w = int(p[0]), int(p.get(1, 1))
        kernel_h = int(p.get(11, kernel_w))
        weight_size = int(p[6])
        in_ch = weight_size // (out_ch * kernel_w * kernel_h)
        layer.blobs["weight"] = cursor.tagged(weight_size).reshape(out_ch, in_ch, kernel_h, kernel_w)
        if int(p.get(5, 0)):
            layer.blobs["bias"] = cursor.raw_fp32(out_ch)
    elif layer.type == "PReLU":
        layer.blobs["slope"] = cursor.raw_fp32(int(p.get(0, 1)))
    elif layer.type == "MemoryData":
        w, h, c = int(p.get(0, 0)), int(p.get(1, 0)), int(p.get(2, 0))
        shape = [d for d in (c, h, w) if d]
        layer.blobs["data"] = cursor.raw_fp32(int(np.prod(shape))).reshape(shape)
    elif layer.type in {"ConvolutionDepthWise", "Deconvolution", "InnerProduct", "BatchNorm", "Scale"}:
        raise ModelFormatError(f"ncnn layer type {layer.type} is not supported by this reader")


def load_ncnn(param_path: Path, bin_path: Path) -> list[NcnnLayer]:
    """Parse an ncnn model into its layers, each carrying its weight blobs as float32 arrays."""
    layers = parse_param(Path(param_path).read_text())
    cursor = _BinCursor(Path(bin_path).read_bytes())
    for layer in layers:
        _read_blobs(layer, cursor)
    if cursor.offset != len(cursor.data):
        raise ModelFormatError(
            f"{bin_path}: {len(cursor.data) - cursor.offset} bytes left after reading all weights; "
            "the .bin does not belong to this .param"
        )
    return layers
