"""Restoration methods for Table 1, behind one call: ``method(lq uint8 HxWx3) -> uint8 (H*s)x(W*s)x3``.

  fluxir    the trained adapter on the base FLUX (:class:`fluxir.restoration.pipeline.FluxIRPipeline`, restore.* settings)
  fluxir-untrained  the same base, sampler and adapter shape with the adapter as initialised (zero-init control):
            what the base alone makes of the LQ input, so the gap to fluxir is what training taught
  bicubic   PIL bicubic x scale: the same upscale FluxIR sees as its control image
  lanczos   PIL Lanczos x scale
  vae-reconstruction  not a restorer: the HQ encoded and decoded by the base model's VAE (posterior mean),
            the ceiling of any method that decodes with that VAE; it sees the HQ, so sets without HQ have
            no value and Table 1 does not rank it
  <name>    a single-image SR checkpoint the user supplies (Real-ESRGAN, BSRGAN, SwinIR, ...), loaded with
            spandrel, which recognises the architecture from the state dict; its scale must be the benchmark's

Models load when the method is built, before any image is restored, so a bad checkpoint stops the run
at once with a message naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from fluxir.config import ConfigError

INTERPOLATIONS = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
VAE_RECONSTRUCTION = "vae-reconstruction"


class MethodError(ConfigError):
    """A method that cannot be built (bad or missing checkpoint, wrong scale); one line naming the file."""


class Method(Protocol):
    name: str
    description: str

    def __call__(self, lq: np.ndarray) -> np.ndarray: ...


def sees_hq(method: Method) -> bool:
    """True for a reference that is given the HQ image instead of the LQ one (an oracle, never ranked)."""
    return bool(getattr(method, "sees_hq", False))


@dataclass
class Interpolation:
    """Classical upscaling with PIL (``bicubic`` is :func:`fluxir.restoration.pipeline.upscale_lq`)."""

    name: str
    scale: int

    @property
    def description(self) -> str:
        return f"PIL {self.name} x{self.scale}"

    def __call__(self, lq: np.ndarray) -> np.ndarray:
        h, w = lq.shape[:2]
        return np.asarray(
            Image.fromarray(lq).resize((w * self.scale, h * self.scale), INTERPOLATIONS[self.name])
        )


class SpandrelMethod:
    """A spandrel ``ImageModelDescriptor`` (SR architecture auto-detected from the checkpoint)."""

    def __init__(self, name: str, descriptor: Any, path: Path):
        self.name, self.model, self.path = name, descriptor, path

    @classmethod
    def load(cls, name: str, path: str | Path, scale: int, device: Any) -> SpandrelMethod:
        import spandrel
        import torch

        path = Path(path).expanduser()
        key = f"benchmark.sr_models[{name}].path={str(path)!r}"
        if not path.is_file():
            raise MethodError(f"{key}: no such file; put the checkpoint there or fix the path")
        try:
            descriptor = spandrel.ModelLoader(device=torch.device(device)).load_from_file(path)
        except spandrel.UnsupportedModelError as exc:
            raise MethodError(
                f"{key}: spandrel does not recognise this checkpoint's architecture ({exc}); "
                "supported: Real-ESRGAN/ESRGAN (RRDBNet), BSRGAN, SwinIR, HAT, DAT, ..."
            ) from exc
        except Exception as exc:  # torch.load / safetensors raise assorted types for damaged files
            raise MethodError(f"{key}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
        if not isinstance(descriptor, spandrel.ImageModelDescriptor):
            raise MethodError(
                f"{key}: a {type(descriptor).__name__} (e.g. inpainting), not an image-to-image model"
            )
        arch = descriptor.architecture.name
        if descriptor.scale != scale:
            raise MethodError(
                f"{key}: {arch} model is x{descriptor.scale}, the benchmark is x{scale} (restore.scale)"
            )
        if descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise MethodError(
                f"{key}: {arch} model takes {descriptor.input_channels} and gives {descriptor.output_channels} "
                "channels; the benchmark needs RGB (3)"
            )
        descriptor.eval()
        return cls(name, descriptor, path)

    @property
    def description(self) -> str:
        return f"{self.model.architecture.name} x{self.model.scale} from {self.path.name} (spandrel)"

    def __call__(self, lq: np.ndarray) -> np.ndarray:
        import torch

        req = self.model.size_requirements
        h, w = lq.shape[:2]
        # Pad (reflect) to the architecture's size rules (e.g. SwinIR's window multiple), crop back after.
        th, tw = max(h, req.minimum), max(w, req.minimum)
        th, tw = -(-th // req.multiple_of) * req.multiple_of, -(-tw // req.multiple_of) * req.multiple_of
        if req.square:
            th = tw = max(th, tw)
        padded = np.pad(
            lq, ((0, th - h), (0, tw - w), (0, 0)), mode="reflect" if th < 2 * h and tw < 2 * w else "edge"
        )
        x = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float().div(255)
        param = next(self.model.model.parameters())
        with torch.no_grad():
            y = self.model(x.to(param.device, param.dtype)).float().clamp(0, 1)
        out = (y[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        s = self.model.scale
        return np.ascontiguousarray(out[: h * s, : w * s])


class FluxIRMethod:
    """The trained adapter, restoring with restore.* (steps, guidance, tile, overlap, seed)."""

    def __init__(self, pipeline: Any, options: Any, adapter: Path, untrained: bool = False):
        self.pipeline, self.options, self.adapter, self.untrained = pipeline, options, adapter, untrained
        self.name = "fluxir-untrained" if untrained else "fluxir"

    @classmethod
    def load(
        cls, base: str, adapter: str | Path, options: Any, dtype: Any, device: Any, untrained: bool = False
    ) -> FluxIRMethod:
        """The adapter folder on ``base``; ``untrained`` puts the adapter's weights back to their
        initialisation (same settings, seeded by ``options.seed``) after loading."""
        from fluxir.restoration.pipeline import FluxIRPipeline

        adapter = Path(adapter)
        if not (adapter / "config.json").is_file():
            raise MethodError(
                f"benchmark.adapter={str(adapter)!r}: no adapter there (config.json missing); run `fluxir train` "
                "first or point benchmark.adapter at a save_pretrained folder"
            )
        pipeline = FluxIRPipeline.from_pretrained(base, adapter, dtype=dtype, device=device)
        pipeline.model.adapter.check_compatible(pipeline.base.transformer)
        if untrained:
            reset_adapter(pipeline, seed=options.seed)
        return cls(pipeline, options, adapter, untrained)

    @property
    def description(self) -> str:
        o = self.options
        what = f"adapter {self.adapter} at initialisation" if self.untrained else f"adapter {self.adapter}"
        return f"FluxIR {what}, {o.steps} Euler steps, guidance {o.guidance}, seed {o.seed}"

    def __call__(self, lq: np.ndarray) -> np.ndarray:
        return self.pipeline(lq, self.options)


class VaeReconstruction:
    """The HQ through the base model's VAE (encode to the posterior mean, decode): what a perfect latent
    costs in fidelity, so the gap between it and ``fluxir`` is the restorer's own share."""

    name = VAE_RECONSTRUCTION
    sees_hq = True

    def __init__(self, vae: Any, base: str):
        self.vae, self.base = vae, base

    @classmethod
    def load(cls, base: str, dtype: Any, device: Any) -> VaeReconstruction:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(base, subfolder="vae", torch_dtype=dtype).to(device).eval()
        return cls(vae, base)

    @property
    def description(self) -> str:
        return (
            f"HQ encoded and decoded by the VAE of {self.base} (a ceiling, not a restoration: it sees the HQ)"
        )

    def __call__(self, hq: np.ndarray) -> np.ndarray:
        import torch

        param = next(self.vae.parameters())
        x = torch.from_numpy(np.ascontiguousarray(hq)).permute(2, 0, 1)[None].to(param.device, param.dtype)
        with torch.no_grad():
            latent = self.vae.encode(x / 127.5 - 1).latent_dist.mode()
            y = self.vae.decode(latent).sample.float().clamp(-1, 1)
        return ((y[0].permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)


def reset_adapter(pipeline: Any, seed: int) -> None:
    """Replace the pipeline's adapter weights with a fresh ``FluxIRAdapter.from_flux`` of the same settings:
    control block and embedders copied from the base, zero-initialised outputs, theta_p = theta_y = 0."""
    import torch

    from fluxir.models.adapter import FluxIRAdapter

    trained = pipeline.model.adapter
    c = trained.config
    torch.manual_seed(seed)
    fresh = FluxIRAdapter.from_flux(
        pipeline.base.transformer,
        rank=c.rank,
        control=c.control,
        text_control=c.text_control,
        learnable_embeddings=c.learnable_embeddings,
        max_sequence_length=c.max_sequence_length,
        dtype=trained.dtype,
    )
    trained.load_state_dict(fresh.state_dict())


def column_order(methods: Sequence[str], sr_models: Sequence[str]) -> list[str]:
    """Table columns: ``methods`` in order, with sr_models it does not list placed just before fluxir."""
    extra = [m for m in sr_models if m not in methods]
    order = list(methods)
    at = order.index("fluxir") if "fluxir" in order else len(order)
    return order[:at] + extra + order[at:]


def _interpolation(name: str, cfg: Any) -> Method:
    return Interpolation(name, cfg.restore.scale)


def _fluxir(name: str, cfg: Any) -> Method:
    from fluxir.models.flux import DTYPES, pick_device, resolve_base

    # The whole restore section (colour fix, tile mode, offload too): the benchmark restores as `fluxir restore`.
    base = resolve_base(cfg.model.base, cfg.model.tiny_dir)
    dtype, device = DTYPES[cfg.model.dtype], pick_device(cfg.model.device)
    untrained = name == "fluxir-untrained"
    return FluxIRMethod.load(base, cfg.benchmark.adapter, cfg.restore, dtype, device, untrained=untrained)


def _vae_reconstruction(name: str, cfg: Any) -> Method:
    from fluxir.models.flux import DTYPES, pick_device, resolve_base

    base = resolve_base(cfg.model.base, cfg.model.tiny_dir)
    return VaeReconstruction.load(base, DTYPES[cfg.model.dtype], pick_device(cfg.model.device))


def _realesrgan_x4plus(name: str, cfg: Any) -> Method:
    from fluxir.benchmark.ncnn_convert import cached_realesrgan_x4plus
    from fluxir.models.flux import pick_device

    path = cached_realesrgan_x4plus(cfg.benchmark.realesrgan_cache)
    return SpandrelMethod.load(name, path, cfg.restore.scale, pick_device(cfg.benchmark.device))


BUILDERS: dict[str, Callable[[str, Any], Method]] = {
    "fluxir": _fluxir,
    "fluxir-untrained": _fluxir,
    **dict.fromkeys(INTERPOLATIONS, _interpolation),
    "realesrgan-x4plus": _realesrgan_x4plus,
    VAE_RECONSTRUCTION: _vae_reconstruction,
}
"""How each of the config's BUILTIN_METHODS is built (the config validates names against that list)."""


def build_methods(cfg: Any) -> list[Method]:
    """Every method of ``cfg.benchmark`` in column order, models loaded."""
    from fluxir.models.flux import pick_device

    b = cfg.benchmark
    paths = {m.name: m.path for m in b.sr_models}
    out: list[Method] = []
    for name in column_order(b.methods, list(paths)):
        if name in BUILDERS:
            out.append(BUILDERS[name](name, cfg))
        else:
            out.append(SpandrelMethod.load(name, paths[name], cfg.restore.scale, pick_device(b.device)))
    return out
