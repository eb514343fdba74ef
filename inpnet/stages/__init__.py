"""One function per DVC stage: a typed params section in, the paths written out.

The ``inpnet`` CLI (``inpnet/cli``) and the Prefect flows (``pipelines/``) both call these
and nothing else, so turning params into library calls is written once. Each stage is its
own module, imported only by the entry points that run it, so ``dvc.yaml`` can list
exactly the code a stage runs (``tests/unit/test_dvc_deps.py`` derives it from the imports).

- :mod:`~inpnet.stages.masks`: the evaluation mask bank;
- :mod:`~inpnet.stages.train`: train one variant (validation and tracking wired from params);
- :mod:`~inpnet.stages.evaluate`: score a method, a trained variant or the baselines;
- :mod:`~inpnet.stages.compare`: the comparison report across methods.
"""
