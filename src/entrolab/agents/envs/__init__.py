"""The testbed environments, each registered as an episodic task in ``registry.TASKS``.

Every module of this package is imported here (so adding an environment is adding a file).
"""

import importlib
import pkgutil

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_mod}")
