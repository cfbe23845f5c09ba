"""Diagnostics that measure what the papers measure, on our runs and on anyone's rollout dumps.

Entry point: :func:`entrolab.diagnostics.diagnose.diagnose`. One module per diagnostic (pure
functions, documented in docs/diagnostics.md): ``passk`` and ``curves`` (pass@k, bands, crossover),
``support`` (Invisible Leash), ``entropy``, ``mechanism`` (covariance, entropy–performance law),
``discriminator``, ``clipping``, ``rank``, ``bon``, ``cliff``, ``starc``, ``preference``. Inputs:
``schema`` (the JSONL rollout schema), ``inputs`` (loaders), ``from_batch`` (our own batches).
Nothing is imported here, so importing one module stays cheap.
"""
