"""The FluxIR training loop (paper section 3.3): a small Trainer over a frozen FLUX and a trainable adapter.

One optimizer step (:meth:`Trainer.train_step`), for global batch k of B same-size pairs:
    t ~ sampler (eq. 5-6) and z1 ~ N(0, I), drawn for the whole global batch from a generator seeded by
    (seed, k): every image gets the same draws whatever the number of processes, and a resumed run
    repeats them without any saved generator
    each process takes its micro-batches of the global batch; for each (forward_backward_step):
        z_t = (1 - t) z0 + t z1                            eq. 1 (z0 = HQ latent)
        v_p = model(z_t, z_lq, p, y, t, guidance)           base FLUX + adapter (eq. 1-4)
        L   = L_MSE(v_p, z1 - z0) + alpha L_P               eq. 7-10
        engine.backward(L)
    the engine clips, steps AdamW and the lr schedule once per grad_accum micro-batches
The timestep reaches the model as t in [0, 1] in the model dtype and guidance as a float32 vector of
``restore.guidance``, exactly as ``FluxIRPipeline.sample`` passes them at inference.

:meth:`Trainer.train` runs the steps with a ``last_step`` flag so the final evaluation and checkpoint
always happen, resumes from the newest complete checkpoint, and writes the adapter with
``save_pretrained``. :func:`fluxir.train.build.build_trainer` assembles a Trainer from params.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import FluxPipeline

from fluxir.config import Config, ConfigError, apply_override, to_dict
from fluxir.data.fingerprint import source_fingerprint
from fluxir.errors import UserError
from fluxir.io import replace_dir, write_json_atomic
from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.adapter_files import StoredPrompt
from fluxir.models.card import write_model_card
from fluxir.models.controlled import ControlledFlux
from fluxir.restoration.pipeline import FluxIRPipeline
from fluxir.tracking.runs import flatten
from fluxir.train import checkpoint as ckpt
from fluxir.train.checkpoint import TrainerState
from fluxir.train.data import BucketBatches, PairLatents
from fluxir.train.ema import AdapterEMA, master_weights
from fluxir.train.engine import Engine, World, all_reduce_mean, barrier, micro_batch_size
from fluxir.train.losses import Crop, Decode, LossTerms, draw_crop, fluxir_loss, velocity_target
from fluxir.train.runlog import RunLog, device_type, peak_memory_gib, tracked_run
from fluxir.train.sampler import make_sampler
from fluxir.train.validation import heldout_psnr, restore_grid, validation_loss

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
# Settings a resumed run may change: they decide how long to run and what to record, not the math so far.
RESUMABLE_CHANGES = {
    "train.max_steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.eval_every",
    "train.grid_every",
    "train.grid_steps",
    "train.track",
    "train.report_dir",
    "train.cache_latents",
    "train.cache_dir",
    "model.device",
    "model.tiny_dir",
}
# Sections whose settings reach the training math (others, e.g. generate or score, do not).
RESUME_CHECKED = ("train.", "model.", "restore.guidance", "degrade.scale", "inputs.")


@dataclass(frozen=True)
class Prompt:
    """The constant empty-prompt conditioning: T5 p (1, L, D), pooled CLIP y (1, P), text ids (L, 3)."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor


class NonFiniteLossError(UserError, FloatingPointError):
    """A NaN or infinite loss: training stops rather than train on it and report NaN metrics."""


@dataclass(frozen=True)
class StepResult:
    """One optimizer step: losses averaged over the global batch, the lr it used, its gradient norm."""

    step: int
    loss: float
    mse: float
    pixel: float
    lr: float
    grad_norm: float | None
    seconds: float


@dataclass
class TrainData:
    """Training pairs in buckets, and the held-out pairs."""

    train: PairLatents
    batches: BucketBatches
    val: PairLatents
    scale: int


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of optimizer step ``step``: its t and noise depend on (seed, step) only."""
    digest = hashlib.sha256(f"fluxir-train:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def resume_settings(config: dict) -> dict:
    """The settings of ``config`` (nested, as ``to_dict`` gives it) that RESUME_CHECKED covers, nested.

    Checkpoints keep only these: a default changed elsewhere (generate, score, ...) must neither stale
    their bytes, which DVC hashes, nor count as a reason to start over."""
    kept: dict = {}
    for key, value in flatten(config).items():
        if key.startswith(RESUME_CHECKED):
            apply_override(kept, key, value)
    return kept


def resume_conflicts(saved: dict, current: dict) -> list[str]:
    """Dotted keys whose values differ between a checkpoint's config and this run's (math-relevant only)."""
    old, new = flatten(saved), flatten(current)
    keys = sorted(
        k for k in set(old) | set(new) if k.startswith(RESUME_CHECKED) and k not in RESUMABLE_CHANGES
    )
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class Trainer:
    """Optimises the adapter of ``model`` (a ControlledFlux) through ``engine``; the base stays frozen.

    ``data`` and ``pipe`` are needed by :meth:`train` (batches, validation, grids); a caller that only
    steps on its own latents (bench/train_step_gpu.py) can leave them out and call
    :meth:`forward_backward_step` directly.
    """

    def __init__(
        self,
        config: Config,
        model: ControlledFlux,
        engine: Engine,
        world: World,
        prompt: Prompt,
        decode: Decode | None,
        data: TrainData | None = None,
        pipe: FluxIRPipeline | None = None,
        compute_dtype: torch.dtype = torch.float32,
        latent_channels: int = 16,
    ):
        self.config = config
        self.cfg = config.train
        self.model = model
        self.engine = engine
        self.world = world
        self.prompt = prompt
        self.decode = decode
        self.data = data
        self.pipe = pipe
        self.compute_dtype = compute_dtype
        self.latent_channels = latent_channels
        # EMA of the adapter weights (train.ema_decay > 0), from the initial weights; resume reloads it.
        self.ema = AdapterEMA(self.cfg.ema_decay, master_weights(engine)) if self.cfg.ema_decay > 0 else None
        self.restart_on_change = False
        """Checkpoints of other settings or inputs: start over (True, as under dvc repro) or stop."""
        self.guidance = config.restore.guidance
        self.sampler = make_sampler(
            self.cfg.timestep_sampler,
            eps=self.cfg.sampler_eps,
            mean=self.cfg.logit_mean,
            std=self.cfg.logit_std,
        )
        self.micro = micro_batch_size(self.cfg, world.size)
        self.out_dir = Path(self.cfg.out_dir)
        self.checkpoints = self.out_dir / CHECKPOINT_DIR
        self.device_label = device_type(world.device)

    # ------------------------------------------------------------------ one step
    def predict(self, z_t: torch.Tensor, z_lq: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity v_p (B, C, h, w) for noisy latents z_t and LQ latents z_lq (B, C, h, w), t (B,)."""
        b, c, h, w = z_t.shape
        dev, dtype = self.world.device, self.compute_dtype
        pack = FluxPipeline._pack_latents
        out = self.engine(
            hidden_states=pack(z_t.to(dtype), b, c, h, w),  # (B, h/2 * w/2, 4C)
            control_latents=pack(z_lq.to(dtype), b, c, h, w),
            encoder_hidden_states=self.prompt.embeds.expand(b, -1, -1),
            pooled_projections=self.prompt.pooled.expand(b, -1),
            timestep=t.to(dtype),  # as FluxIRPipeline.sample: t in [0, 1], model dtype
            img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, dev, dtype),
            txt_ids=self.prompt.text_ids,
            guidance=torch.full((b,), self.guidance, device=dev, dtype=torch.float32),
        )
        return FluxPipeline._unpack_latents(out, h * 8, w * 8, 8)  # (B, C, h, w)

    def loss(
        self,
        v_pred: torch.Tensor,
        v_target: torch.Tensor,
        z0: torch.Tensor,
        t: torch.Tensor,
        crop: Crop | None = None,
    ) -> LossTerms:
        """L = L_MSE + alpha L_P (eq. 10), L_P on ``crop`` of the latent if given; override for other objectives."""
        return fluxir_loss(
            v_pred,
            v_target,
            z0,
            t,
            decode=self.decode,
            alpha=self.cfg.alpha,
            pixel_loss=self.cfg.pixel_loss and self.decode is not None,
            pixel_target=self.cfg.pixel_target,
            crop=crop,
        )

    def compute_loss(
        self,
        z0: torch.Tensor,
        z_lq: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        crop: Crop | None = None,
    ) -> LossTerms:
        """Loss terms of one micro-batch; z0, z_lq, noise (B, C, h, w) float32 on the device, t (B,)."""
        t_b = t.view(-1, 1, 1, 1)
        z_t = (1 - t_b) * z0 + t_b * noise  # eq. 1
        return self.loss(self.predict(z_t, z_lq, t), velocity_target(z0, noise), z0, t, crop)  # eq. 7

    def forward_backward_step(self, *inputs: torch.Tensor, crop: Crop | None = None) -> LossTerms:
        """:meth:`compute_loss` of ``inputs`` (z0, z_lq, t, noise), then its backward through the engine."""
        terms = self.compute_loss(*inputs, crop=crop)
        # Checked before backward, so no NaN gradient reaches the optimizer or a checkpoint; the one
        # device sync per micro-step is cheap next to the step itself.
        if not bool(torch.isfinite(terms.total)):
            raise NonFiniteLossError(
                f"the training loss is {terms.total.item()} (t={inputs[2].flatten().tolist()}); lower train.lr or "
                "train.grad_clip, or check the settings and the pairs; the last checkpoint is kept"
            )
        self.engine.backward(terms.total)
        return terms

    def train_step(self, step: int) -> StepResult:
        """Optimizer step ``step`` (0-based) on global batch ``step``; returns the result as step + 1."""
        start = time.perf_counter()
        dev = self.world.device
        indices = self.data.batches.batch(step)
        pair = self.data.train.pairs[indices[0]]
        generator = step_generator(self.cfg.seed, step)
        t_all = self.sampler(len(indices), generator)  # (B,)       eq. 5-6
        noise_all = torch.randn(  # (B, C, h, w) z1
            (len(indices), self.latent_channels, pair.height // 8, pair.width // 8), generator=generator
        )
        # drawn after t and noise, so those stay what they are without a crop; one window per global batch
        crop = draw_crop(pair.height // 8, pair.width // 8, self.cfg.pixel_crop, generator)
        lr = self.engine.lr  # the lr this step's update uses
        sums = torch.zeros(3, device=dev)
        for accum in range(self.cfg.grad_accum):
            lo = (accum * self.world.size + self.world.rank) * self.micro
            z0, z_lq = self.data.train.load(indices[lo : lo + self.micro])
            terms = self.forward_backward_step(
                z0.to(dev, torch.float32),
                z_lq.to(dev, torch.float32),
                t_all[lo : lo + self.micro].to(dev),
                noise_all[lo : lo + self.micro].to(dev),
                crop=crop,
            )
            sums += torch.stack([terms.total, terms.mse, terms.pixel]).detach()
            self.engine.step()
        if self.ema is not None:  # after this global batch's optimizer step
            self.ema.update(master_weights(self.engine))
        loss, mse, pixel = all_reduce_mean(sums / self.cfg.grad_accum, self.world).tolist()
        return StepResult(step + 1, loss, mse, pixel, lr, self.engine.grad_norm, time.perf_counter() - start)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """Validation loss on the held-out pairs (fixed t and noise: deterministic)."""
        dev = self.world.device
        latents = [tuple(z[0] for z in self.data.val.load([i])) for i in range(len(self.data.val.pairs))]

        def loss_fn(z0, z_lq, t, noise):
            f32 = torch.float32
            return self.compute_loss(z0.to(dev, f32), z_lq.to(dev, f32), t.to(dev), noise.to(dev))

        with torch.no_grad():
            return validation_loss(latents, self.cfg.val_timesteps, loss_fn)

    def grid(self, step: int, run_log: RunLog | None) -> None:
        if self.pipe is None or not self.data.val.pairs:
            return
        image = restore_grid(
            self.pipe, self.data.val.pairs[0], self.data.scale, self.cfg.grid_steps, self.guidance
        )
        if run_log is not None:
            run_log.image(image, step)
            from fluxir.data.images import write_image_atomic

            write_image_atomic(Path(self.cfg.report_dir) / "grid.png", image)

    # ------------------------------------------------------------------ checkpoints
    def input_fingerprints(self) -> dict[str, str]:
        """The training pairs and the base by content: under ``dvc repro`` the checkpoints persist
        between runs, and new pairs or a rebuilt base keep their paths."""
        from fluxir.models.flux import resolve_base

        base = resolve_base(self.config.model.base, self.config.model.tiny_dir)
        return {"pairs": source_fingerprint(self.cfg.manifest), "model": source_fingerprint(base)}

    def resume(self) -> TrainerState:
        """The newest complete checkpoint's state (engine and RNG restored), or a fresh state."""
        settings = resume_settings(to_dict(self.config) | {"inputs": self.input_fingerprints()})
        fresh = TrainerState(config=settings,
                             world_size=self.world.size)  # fmt: skip
        if self.world.is_main:
            removed = ckpt.remove_partials(self.checkpoints)
            if removed:
                log.info("removed %d incomplete checkpoint folder(s) from %s", removed, self.checkpoints)
        barrier(self.world)
        found = ckpt.latest_checkpoint(self.checkpoints)
        if found is None:
            return fresh
        step, folder = found
        state = ckpt.read_state(folder)
        conflicts = resume_conflicts(state.config, fresh.config)
        if conflicts and self.restart_on_change:
            if self.world.is_main:
                for _, old in ckpt.list_checkpoints(self.checkpoints):
                    shutil.rmtree(old)
                ckpt.cost_path(self.checkpoints).unlink(missing_ok=True)
                log.warning("settings or inputs changed (%s): checkpoints removed, starting over",
                            "; ".join(conflicts[:3]))  # fmt: skip
            barrier(self.world)
            return fresh
        if conflicts:
            raise ConfigError(
                f"{folder} was made with other settings or inputs ({'; '.join(conflicts[:3])}); restore them, "
                f"move {self.checkpoints} away, or pass --restart-on-change to start over"
            )
        if state.world_size != self.world.size and self.cfg.engine == "deepspeed":
            raise ConfigError(
                f"{folder} holds ZeRO state of {state.world_size} process(es); resume with {state.world_size}, "
                f"not {self.world.size}"
            )
        self.engine.load(folder)
        if self.ema is not None:
            self.ema.load(folder)
        rng = ckpt.rng_path(folder, self.world.rank)
        if rng.is_file():
            ckpt.load_rng(rng)
        state.config = fresh.config  # record the resumable changes (e.g. a longer max_steps)
        log.info("resumed from %s (step %d)", folder, step)
        return state

    def save_checkpoint(self, state: TrainerState) -> Path:
        """Every process writes its part into a partial folder; process 0 commits it by renaming."""
        partial = ckpt.partial_dir(self.checkpoints, state.step)
        if self.world.is_main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        barrier(self.world)
        self.engine.save(partial)
        ckpt.save_rng(ckpt.rng_path(partial, self.world.rank))
        if self.ema is not None and self.world.is_main:
            self.ema.save(partial)
        barrier(self.world)
        final = partial.parent / ckpt.checkpoint_name(state.step)
        if self.world.is_main:
            ckpt.record_cost(self.checkpoints, state.step, state.device_seconds)  # beside, not in, the folder
            ckpt.commit(partial, state)
            ckpt.prune(self.checkpoints, self.cfg.keep_checkpoints)
        barrier(self.world)
        return final

    def export_adapter(self) -> Path:
        """Write the adapter (fp32 master weights) with ``save_pretrained`` to ``<out_dir>/adapter``."""
        state = self.engine.adapter_state_dict()  # every process: ZeRO gathers
        target = self.out_dir / ADAPTER_DIR
        if self.world.is_main:
            adapter = FluxIRAdapter.from_config(self.model.adapter.config)
            adapter.load_state_dict(state)
            tmp = self.out_dir / f".{ADAPTER_DIR}.tmp"
            # The empty prompt's embeddings travel with the adapter: restore never needs T5 and CLIP.
            adapter.stored_prompt = StoredPrompt(self.prompt.embeds, self.prompt.pooled, self.prompt.text_ids)
            shutil.rmtree(tmp, ignore_errors=True)
            adapter.save_pretrained(tmp, safe_serialization=True)
            if self.ema is not None:  # beside the raw weights; loading the folder uses it instead
                self.ema.export(tmp, state)
            replace_dir(tmp, target)
        barrier(self.world)
        return target

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainerState:
        """Train to ``max_steps`` from the newest checkpoint; evaluate, checkpoint and export on the way."""
        cfg, main = self.cfg, self.world.is_main
        state = self.resume()
        tags = {"stage": "train", "resumed_from_step": state.step, "processes": self.world.size}
        with tracked_run(main and cfg.track, self.config, tags) as mlflow_on:
            run_log = RunLog(cfg.report_dir, mlflow_on) if main else None
            if run_log is not None:
                run_log.restart(state)
            if state.step == 0:
                self._record_val(state, run_log)
            spent = state.device_seconds.get(self.device_label, 0.0)
            start = time.perf_counter()
            while state.step < cfg.max_steps:
                result = self.train_step(state.step)
                state.step = result.step
                state.epoch, state.batch_in_epoch = self.data.batches.position(state.step)
                row = {k: getattr(result, k) for k in (*ckpt.LOSS_COLUMNS, "grad_norm")}
                state.history.append(row)
                if run_log is not None:
                    run_log.step(
                        row,
                        {
                            "samples_per_s": cfg.batch_size / result.seconds,
                            "peak_mem_gib": peak_memory_gib(self.world.device),
                        },
                    )
                last_step = state.step == cfg.max_steps
                if last_step or (cfg.eval_every and state.step % cfg.eval_every == 0):
                    self._record_val(state, run_log)
                if cfg.grid_every and state.step % cfg.grid_every == 0 and not last_step:
                    self.grid(state.step, run_log)
                if last_step or state.step % cfg.checkpoint_every == 0:
                    elapsed = (time.perf_counter() - start) * self.world.size
                    state.device_seconds[self.device_label] = spent + elapsed
                    self.save_checkpoint(state)
            self.export_adapter()
            if main:  # README.md model card beside the weights: base, licence, data, settings, cost
                # no cost ledger here: the adapter folder is a DVC output and must not change with wall-clock
                # time; the ledger goes to the training run in MLflow (runlog)
                write_model_card(self.out_dir / ADAPTER_DIR, self.config, None, Path(cfg.report_dir).parent)
            self.grid(state.step, run_log)
            summary = self._summary(state)
            if run_log is not None:
                # metrics.json is a DVC metric: no wall-clock figures; device-hours go to MLflow only
                hours = sum(state.device_seconds.values()) / 3600
                run_log.finish({**summary, "device_hours": hours}, state.device_seconds, state.step)
                write_json_atomic(Path(cfg.report_dir) / "metrics.json", summary)
        return state

    def _record_val(self, state: TrainerState, run_log: RunLog | None) -> None:
        if not self.data.val.pairs:
            return
        row = {"step": state.step, **self.evaluate()}
        state.val_history.append(row)
        if run_log is not None:
            run_log.val(row)
        log.info("step %d: val_loss %.5f", state.step, row["val_loss"])

    def _summary(self, state: TrainerState) -> dict[str, float]:
        summary: dict[str, float] = {"steps": state.step}
        if state.history:
            summary.update({f"final_{k}": state.history[-1][k] for k in ("loss", "mse", "pixel")})
        if state.val_history:
            first, last = state.val_history[0], state.val_history[-1]
            summary.update({"val_loss_start": first["val_loss"], "val_loss_end": last["val_loss"]})
        if self.pipe is not None and self.data.val.pairs:
            summary.update(
                heldout_psnr(
                    self.pipe, self.data.val.pairs, self.data.scale, self.config.restore.steps, self.guidance
                )
            )
        return summary
