"""Training engines behind one small interface: DeepSpeed ZeRO (default) or plain torch AdamW.

What the engine wraps is :class:`TrainModule`: the adapter is its only registered child, and the frozen
base FLUX rides along in a plain attribute. So the base is in no optimizer, gradient bucket or ZeRO
partition, is not cast or broadcast by the engine, and its 12B weights are never in a checkpoint; the
engine's forward still runs the whole controlled model (base + adapter), so ZeRO-3 gathers adapter
weights where the forward uses them.

Batch sizes, optimizer, clipping and bf16 come from params.yaml (``train.*``, ``model.dtype``); the
DeepSpeed JSON holds only ZeRO settings and may not repeat those keys. ``"torch_adam": true`` makes
DeepSpeed use ``torch.optim.AdamW``, so no FusedAdam/CPUAdam is compiled (on CPU DeepSpeed still builds
its small shared-memory comm op once, ~1 min, cached in $TORCH_EXTENSIONS_DIR, by default
~/.cache/torch_extensions).

Processes: one plain process (``python -m fluxir.stages.train``) gets a one-rank process group with an
in-process store (no rendezvous socket: torch's TCPStore would listen on every interface, unauthenticated)
and gloo on the loopback interface, so a training run opens no port reachable from another machine; under
``torchrun`` or ``deepspeed --num_gpus N`` the launcher's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* are
used (MASTER_ADDR defaults to 127.0.0.1; a multi-node launch sets its own). Backend: gloo on CPU, nccl on
CUDA.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from fluxir.config import ConfigError, TrainConfig
from fluxir.models.controlled import ControlledFlux
from fluxir.models.flux import pick_device
from fluxir.train.checkpoint import ENGINE_DIR
from fluxir.train.schedules import lr_multiplier

# DeepSpeed keys that params.yaml decides; a DeepSpeed JSON that sets one is refused.
PARAMS_OWNED_KEYS = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "optimizer",
    "scheduler",
    "bf16",
    "fp16",
)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(engine: str, device: str = "auto") -> World:
    """Set up the process group (DeepSpeed engine) and pick this process's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if engine == "torch":
        if size > 1:
            raise ConfigError(
                f"train.engine='torch' runs one process (WORLD_SIZE={size}); use train.engine=deepspeed"
            )
        return World(0, 1, 0, pick_device(device))
    single = size == 1
    if single:  # a plain process: give it a one-rank group of its own
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
            os.environ.setdefault(key, value)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's own listener on loopback only
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    import deepspeed
    import torch.distributed as dist

    backend = "nccl" if dev.type == "cuda" else "gloo"
    if single and not dist.is_initialized():
        # HashStore lives in this process: one rank needs no rendezvous, so nothing listens for one
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    return World(dist.get_rank(), dist.get_world_size(), local_rank, dev)


def _distributed(world: World) -> bool:
    return world.size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def barrier(world: World) -> None:
    if _distributed(world):
        torch.distributed.barrier()


def all_reduce_mean(values: torch.Tensor, world: World) -> torch.Tensor:
    """Mean over processes of a small tensor (returns a new tensor; the input is left as it is)."""
    out = values.detach().clone()
    if _distributed(world):
        torch.distributed.all_reduce(out)
        out /= world.size
    return out


def micro_batch_size(cfg: TrainConfig, world_size: int) -> int:
    """Images per process per forward: batch_size / (grad_accum x processes)."""
    per_step = cfg.grad_accum * world_size
    if cfg.batch_size % per_step:
        raise ConfigError(
            f"train.batch_size={cfg.batch_size}: must be a multiple of train.grad_accum x processes "
            f"= {cfg.grad_accum} x {world_size}"
        )
    return cfg.batch_size // per_step


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    return functools.partial(
        lr_multiplier, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, kind=cfg.schedule
    )


class TrainModule(nn.Module):
    """The module an engine wraps: the adapter's parameters only; the frozen base is carried unregistered."""

    def __init__(self, model: ControlledFlux):
        super().__init__()
        self.adapter = model.adapter
        self._frozen = (model,)  # a tuple is not registered: no parameters(), state_dict(), .to() or ZeRO

    @property
    def model(self) -> ControlledFlux:
        return self._frozen[0]

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Packed velocity prediction (B, N, C); ``inputs`` as :meth:`ControlledFlux.forward`."""
        return self.model(**inputs, return_dict=False)[0]


class Engine(Protocol):
    """What the trainer needs from an engine."""

    module: TrainModule

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> None:
        """Called after every micro-batch; updates weights (and the lr) every grad_accum calls."""

    @property
    def lr(self) -> float: ...
    @property
    def grad_norm(self) -> float | None: ...
    def save(self, folder: Path) -> None:
        """Write this process's engine state under ``folder`` (every process calls it)."""

    def load(self, folder: Path) -> None: ...
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Full fp32 adapter weights on CPU (every process calls it: ZeRO gathers them)."""


# ----------------------------------------------------------------------------------------------
# Plain torch


class TorchEngine:
    """torch AdamW + LambdaLR, gradient accumulation and clipping, one process.

    The adapter keeps fp32 weights; with a bf16 base (GPU) the forward runs under bf16 autocast.
    """

    def __init__(
        self,
        module: TrainModule,
        params: Iterable[nn.Parameter],
        cfg: TrainConfig,
        world: World,
        autocast_dtype: torch.dtype | None = None,
    ):
        self.module = module
        self.params = list(params)
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=ADAM_EPS, weight_decay=cfg.weight_decay
        )
        self.scheduler = LambdaLR(self.optimizer, lr_lambda(cfg))
        self.accum = cfg.grad_accum
        self.clip = cfg.grad_clip
        self.device = world.device
        self.autocast_dtype = autocast_dtype
        self.micro_steps = 0
        self._grad_norm: float | None = None

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is None:
            return self.module(**inputs)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return self.module(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accum).backward()

    def step(self) -> None:
        self.micro_steps += 1
        if self.micro_steps % self.accum:
            return
        limit = self.clip if self.clip > 0 else float("inf")  # inf: measure the norm, clip nothing
        self._grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, limit))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def grad_norm(self) -> float | None:
        return self._grad_norm

    def save(self, folder: Path) -> None:
        (folder / ENGINE_DIR).mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "adapter": self.module.adapter.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "micro_steps": self.micro_steps,
            },
            folder / ENGINE_DIR / "engine.pt",
        )

    def load(self, folder: Path) -> None:
        state = torch.load(folder / ENGINE_DIR / "engine.pt", map_location=self.device, weights_only=True)
        self.module.adapter.load_state_dict(state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps = state["micro_steps"]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().cpu().clone() for k, v in self.module.adapter.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# DeepSpeed


def read_deepspeed_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"train.deepspeed_config={str(path)!r}: file not found (configs/deepspeed/zero2.json or zero3.json)"
        )
    try:
        base = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"train.deepspeed_config={str(path)!r}: not valid JSON ({exc})") from exc
    clash = [k for k in PARAMS_OWNED_KEYS if k in base]
    if clash:
        raise ConfigError(
            f"train.deepspeed_config={str(path)!r}: sets {clash[0]!r}, which params.yaml decides "
            "(train.batch_size, grad_accum, grad_clip, lr, ... and model.dtype); remove it from the JSON"
        )
    return base


def deepspeed_config(base: dict[str, Any], cfg: TrainConfig, world_size: int, bf16: bool) -> dict[str, Any]:
    """The full DeepSpeed config: the JSON's ZeRO settings plus what params.yaml decides."""
    return {
        **base,
        "train_batch_size": cfg.batch_size,
        "train_micro_batch_size_per_gpu": micro_batch_size(cfg, world_size),
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "bf16": {"enabled": bf16},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,
                "betas": list(cfg.adam_betas),
                "eps": ADAM_EPS,
                "weight_decay": cfg.weight_decay,
                "torch_adam": True,  # torch.optim.AdamW: nothing to compile
            },
        },
    }


class DeepSpeedEngine:
    """``deepspeed.initialize`` over :class:`TrainModule` with the trainable adapter parameters only."""

    def __init__(
        self, module: TrainModule, params: Iterable[nn.Parameter], ds_config: dict[str, Any], cfg: TrainConfig
    ):
        import deepspeed
        from deepspeed.utils import logger as ds_logger

        # DeepSpeed's INFO lines (config dumps, per-step timers) would drown the run's own log.
        ds_logger.setLevel("WARNING")
        # DeepSpeed 0.19 calls collectives torch 2.14 renamed; the warning repeats every step and is not ours.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning
        )
        schedule = lr_lambda(cfg)
        self.engine, _, _, _ = deepspeed.initialize(
            model=module,
            model_parameters=list(params),
            config=ds_config,
            lr_scheduler=lambda optimizer: LambdaLR(optimizer, schedule),
            dist_init_required=False,
        )
        self.module = self.engine.module

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.engine(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)  # scales by 1 / grad_accum itself

    def step(self) -> None:
        self.engine.step()

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    @property
    def grad_norm(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def save(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder), tag=ENGINE_DIR)

    def load(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(folder), tag=ENGINE_DIR, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no engine state in {folder / ENGINE_DIR}")

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param

        state = {}
        for name, p in self.module.adapter.named_parameters():
            # The fp32 master weight (under bf16 the module holds a rounded copy).
            full = safe_get_full_fp32_param(p) if p.requires_grad else None
            if full is None:  # frozen (structurally unused) parameters have no master; gather under ZeRO-3
                with deepspeed.zero.GatheredParameters([p], enabled=hasattr(p, "ds_id")):
                    full = p.detach().clone()
            state[name] = full.detach().float().cpu().clone()
        return state


def build_engine(model: ControlledFlux, cfg: TrainConfig, world: World, compute_dtype: torch.dtype) -> Engine:
    """The engine ``cfg.engine`` names, over ``model``'s trainable adapter parameters."""
    module = TrainModule(model)
    params = model.trainable_parameters()
    low_precision = compute_dtype != torch.float32
    if cfg.engine == "torch":
        return TorchEngine(
            module, params, cfg, world, autocast_dtype=compute_dtype if low_precision else None
        )
    ds_config = deepspeed_config(
        read_deepspeed_json(cfg.deepspeed_config), cfg, world.size, bf16=low_precision
    )
    return DeepSpeedEngine(module, params, ds_config, cfg)
