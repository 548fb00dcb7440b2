"""The PyTorch ports of the bundled ncnn models: file parsing, numerics against ncnn itself, other formats."""

import numpy as np
import pytest
import torch

from vidup.engines.ncnn_format import load_ncnn, parse_param
from vidup.engines.sr_archs import SPAN, conv_call_order, reparameterise_conv3xc
from vidup.engines.weights import BUNDLED_MODELS, bundled_model_files, load_sr_model
from vidup.errors import ModelFormatError, ModelNotFoundError
from media import decoded


def test_param_parser_reads_layers_and_array_params():
    text = "7767517\n2 2\nInput in 0 1 data\nConvolution c 1 1 data out 0=8 1=3 5=1 6=216 9=2 -23310=1,2.000000e-01\n"
    layers = parse_param(text)
    assert [layer.type for layer in layers] == ["Input", "Convolution"]
    assert layers[1].params[0] == 8 and layers[1].params[6] == 216
    assert layers[1].params[10] == [pytest.approx(0.2)]


def test_param_parser_rejects_other_files():
    with pytest.raises(ModelFormatError):
        parse_param("hello\n")


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_bundled_files_are_read_to_the_last_byte(name):
    layers = load_ncnn(*bundled_model_files(BUNDLED_MODELS[name]))
    convs = [layer for layer in layers if layer.type == "Convolution"]
    assert len(convs) == {"clear-reality-x4": 22, "realesrgan-x4plus": 351}[name]
    assert all(np.isfinite(c.blobs["weight"]).all() for c in convs)


def _ncnn_reference(name: str, rgb: np.ndarray) -> np.ndarray:
    import ncnn

    param, weights = bundled_model_files(BUNDLED_MODELS[name])
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 2
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.load_param(str(param))
    net.load_model(str(weights))
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)
    with net.create_extractor() as ex:
        ex.input("data", ncnn.Mat(chw).clone())
        _, out = ex.extract("output")
        return np.array(out).copy().transpose(1, 2, 0)


@pytest.mark.parametrize("name", ["clear-reality-x4", "realesrgan-x4plus"])
def test_torch_port_matches_ncnn_runtime_on_a_real_frame(name, sample):
    frame = decoded(sample)[30][40:104, 96:160]  # 64x64 of players, pitch lines and crowd
    _, model, _ = load_sr_model(name)
    with torch.inference_mode():
        ours = model(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    reference = _ncnn_reference(name, frame)
    assert ours.shape == reference.shape == (256, 256, 3)
    diff = np.abs(ours.clip(0, 1) - reference.clip(0, 1)) * 255
    assert diff.max() <= 2.0, f"max difference {diff.max():.3f}/255"
    # and the model really upscales: the result is close to a plain resize, not noise
    import cv2

    assert np.abs(ours.clip(0, 1) * 255 - cv2.resize(frame, (256, 256), interpolation=cv2.INTER_CUBIC)).mean() < 20


def test_call_order_follows_forward_not_registration():
    model = SPAN(channels=8)
    names = {id(m): n for n, m in model.named_modules()}
    order = [names[id(m)] for m in conv_call_order(model)]
    assert order.index("conv_2.eval_conv") < order.index("conv_cat")  # registered the other way round


def test_span_training_branches_fold_into_eval_conv():
    torch.manual_seed(0)
    c_in, c_out, gain = 4, 6, 2
    sd = {
        "sk.weight": torch.randn(c_out, c_in, 1, 1),
        "sk.bias": torch.randn(c_out),
        "conv.0.weight": torch.randn(c_in * gain, c_in, 1, 1),
        "conv.0.bias": torch.randn(c_in * gain),
        "conv.1.weight": torch.randn(c_out * gain, c_in * gain, 3, 3),
        "conv.1.bias": torch.randn(c_out * gain),
        "conv.2.weight": torch.randn(c_out, c_out * gain, 1, 1),
        "conv.2.bias": torch.randn(c_out),
    }
    x = torch.randn(1, c_in, 9, 11)
    F = torch.nn.functional
    branch = F.conv2d(F.pad(x, (1, 1, 1, 1)), sd["conv.0.weight"], sd["conv.0.bias"])
    branch = F.conv2d(branch, sd["conv.1.weight"], sd["conv.1.bias"])
    branch = F.conv2d(branch, sd["conv.2.weight"], sd["conv.2.bias"]) + F.conv2d(x, sd["sk.weight"], sd["sk.bias"])
    weight, bias = reparameterise_conv3xc(sd, "")
    assert torch.allclose(F.conv2d(x, weight, bias, padding=1), branch, atol=1e-3)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_user_weight_files_load_into_the_same_architectures(tmp_path, suffix):
    arch, model, _ = load_sr_model("clear-reality-x4")
    path = tmp_path / f"mine{suffix}"
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    arch2, model2, name = load_sr_model(str(path))
    assert arch2.name == "span" and name == "mine"
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        # the user file carries no mean buffer (upstream checkpoints do not); ClearReality's equals the default
        assert torch.allclose(model(x), model2(x), atol=1e-5)


def test_rrdbnet_user_checkpoint_with_params_ema(tmp_path):
    from kornia.models.rrdbnet import RRDBNet

    small = RRDBNet(3, 3, scale=2, num_feat=8, num_block=2, num_grow_ch=4)
    torch.save({"params_ema": small.state_dict()}, tmp_path / "esrgan.pth")
    arch, model, _ = load_sr_model(str(tmp_path / "esrgan.pth"))
    assert arch.name == "rrdbnet" and model.scale == 2
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_unknown_weights_and_missing_models_are_typed_errors(tmp_path):
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "odd.pth")
    with pytest.raises(ModelFormatError, match="none of the supported architectures"):
        load_sr_model(str(tmp_path / "odd.pth"))
    with pytest.raises(ModelNotFoundError, match="not a bundled model"):
        load_sr_model("no-such-model")
