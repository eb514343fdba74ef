"""The one trainer for every model family.

- :mod:`inpnet.train.trainer`: ``train(variant, *, shards, out_dir, ...)`` -> checkpoint dir.
- :mod:`inpnet.train.steps`: the reconstruction and adversarial (D then G) step objects.
- :mod:`inpnet.train.checkpoint`: atomic safetensors checkpoints and ``load_model``.
- :mod:`inpnet.train.optim`: AdamW, warm-up + cosine, EMA, precision (autocast) selection.
- :mod:`inpnet.train.distributed`: torchrun ranks and the rank-zero decision.
- :mod:`inpnet.train.batches`: the resumable batch stream and sample grids.

Nothing is imported here, so ``import inpnet.train`` stays cheap and side-effect free.
"""
