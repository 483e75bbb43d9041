"""Training FluxIR (paper section 3.3).

- trainer      the loop: one optimizer step, evaluation, checkpoints, adapter export
- build        :func:`~fluxir.train.build.build_trainer`: a Trainer from params (processes, data, model, engine)
- engine       DeepSpeed ZeRO or torch AdamW behind one interface; the process group
- data         pairs from the degrade manifest, size buckets, the latent cache
- checkpoint   resumable checkpoint layout, atomic commit, the CSV curves' format
- runlog       what a run records: CSV curves, MLflow
- losses, sampler, schedules, validation   pure pieces (tensors in, tensors out), testable without a model
"""
