"""The pretraining views: one specification (spec), one parameter sampler (sampler) and two executors
of its records, per image on the CPU (per_image) and per batch on the training device (batched)."""
