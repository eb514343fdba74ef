"""The one trainer for every model family.

- :mod:`inpnet.train.trainer`: ``train(variant, *, shards, out_dir, ...)`` -> checkpoint dir.
- :mod:`inpnet.train.steps`: the reconstruction and adversarial (D then G) step objects, and
  ``build_step``, which gives each family its recipe (optimisers, schedules, discriminator, noise).
- :mod:`inpnet.train.checkpoint`: atomic safetensors checkpoints and ``load_model``.
- :mod:`inpnet.train.optim`: AdamW and Adam, warm-up + cosine or constant schedules, StyleGAN2's
  lazy-regularisation adjustment, EMA, precision (autocast) selection.
- :mod:`inpnet.train.distributed`: torchrun ranks and the rank-zero decision.
- :mod:`inpnet.train.batches`: the resumable batch stream and sample grids.

Nothing is imported here, so ``import inpnet.train`` stays cheap and side-effect free.
"""
