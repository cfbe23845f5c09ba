"""Preference optimization: pair data, pairwise losses (DPO family), the offline trainer, DNO.

Importing this package registers the built-in preference losses (``PREFERENCE_LOSSES``).
"""

from entrolab.preference import cpl, fdpo, losses, power, spo  # noqa: F401  (registers the losses)
