"""Policy objectives: surrogates, token weights, aggregations, regularizers and controllers.

Importing this package registers every built-in objective component. ``temperature`` holds the
AEPO/DCPO math; ``temperature_control`` registers them as advantage estimators (``aepo``, ``dcpo``)
that use the trainer's extra-sampling and extra-scoring hooks.
"""

from entrolab.objectives import (  # noqa: F401
    aggregation,
    covariance,
    discriminator,
    entropy,
    epo,
    importance,
    kl,
    safe,
    siren,
    steer,
    surrogates,
    temperature,
    temperature_control,
    weights,
)
