"""Training pieces of FluxIR (paper section 3.3): timestep samplers, the loss, learning-rate schedules.

Each module is pure (tensors in, tensors out) so it can be tested without a model; the trainer wires them.
"""
