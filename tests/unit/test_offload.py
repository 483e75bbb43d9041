"""Memory modes: model and sequential offload run the explicit block loop and give the same restoration.

On a CPU-only machine the execution device is the CPU, so these tests show that every mode runs and
gives the same pixels, and that the hooks sit where ControlledFlux's loop reaches them; how much device
memory each frees can only be measured on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from accelerate.hooks import ModelHook, add_hook_to_module
from helpers import one_thread, tiny_restorer  # noqa: F401 (one_thread: a fixture)
from PIL import Image
from skimage import data as skdata

from fluxir.restoration.pipeline import FluxIRPipeline, RestoreOptions

OPTIONS = RestoreOptions(steps=2, tile=128, overlap=32, seed=4)  # fused tiles: 3 x 3


class Counter(ModelHook):
    def __init__(self):
        self.calls = 0

    def pre_forward(self, module, *args, **kwargs):
        self.calls += 1
        return args, kwargs


@pytest.fixture(scope="module")
def pipeline() -> FluxIRPipeline:
    return tiny_restorer()


@pytest.fixture(scope="module")
def lq() -> np.ndarray:
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((68, 64), Image.BICUBIC))


def test_every_offload_mode_gives_the_same_restoration(pipeline, lq):
    pipeline.place("cpu", "none")
    reference = pipeline(lq, OPTIONS)
    for mode in ("model", "sequential"):
        pipeline.place("cpu", mode)
        np.testing.assert_array_equal(pipeline(lq, OPTIONS), reference, err_msg=mode)
        if mode == "sequential":
            # Weights live off the device (meta here) between uses: the restore above ran with no weight
            # used outside the hooks, i.e. the block loop reaches every hooked module.
            assert pipeline.model.transformer.transformer_blocks[0].attn.to_q.weight.is_meta
            assert pipeline.model.adapter.theta_p.is_meta
    pipeline.place("cpu", "none")  # detaching the hooks brings the weights back
    assert not pipeline.model.transformer.transformer_blocks[0].attn.to_q.weight.is_meta
    np.testing.assert_array_equal(pipeline(lq, OPTIONS), reference)


def test_model_offload_hooks_the_controlled_model_because_transformer_forward_never_runs(pipeline, lq):
    """diffusers' enable_model_cpu_offload hooks FluxTransformer2DModel.forward; the block loop never calls
    it, so such a hook would never move the transformer. The hook on ControlledFlux fires every step."""
    pipeline.place("cpu", "model")
    on_transformer, on_model = Counter(), Counter()
    add_hook_to_module(pipeline.model.transformer, on_transformer, append=True)
    add_hook_to_module(pipeline.model, on_model, append=True)
    try:
        pipeline(lq, OPTIONS)
    finally:
        pipeline.place("cpu", "none")
    assert on_transformer.calls == 0
    assert on_model.calls == OPTIONS.steps * 9  # one call per tile and step (one tile per call on a CPU)
