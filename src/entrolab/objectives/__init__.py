"""Policy objectives: surrogates, token weights, aggregations, regularizers and controllers.

Importing this package registers every built-in objective component.
"""

from entrolab.objectives import aggregation, entropy, kl, surrogates  # noqa: F401
