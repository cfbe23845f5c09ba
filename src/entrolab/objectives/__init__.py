"""Policy objectives: surrogates, token weights, aggregations, regularizers and controllers.

Importing this package registers every built-in objective component. ``temperature`` holds the
AEPO/DCPO math, which is not registered until the trainer can run extra temperature passes.
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
    weights,
)
