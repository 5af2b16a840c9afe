"""``gen3dface train``: the multi-view model's training on accelerate (Gen3D-Face §3.2, §4).

``config`` (TrainConfig), ``data`` (samples from the dataset format, deterministic order),
``objective`` (the denoising loss with condition dropout), ``state`` (checkpoints: a model
folder ``generate --weights`` loads + the exact training state, written atomically),
``loop`` (the accelerate loop), ``command`` (the CLI). See docs/training.md.
"""
