"""The seven baselines of the paper's Table 2, under the one model contract and their own
objectives. Importing this package registers them (``fndkit.models.registry.MODELS``) and their
objectives (``fndkit.objectives.OBJECTIVES``).

| name | paper | objective | personalized | cold start |
|---|---|---|---|---|
| ``lpae-u`` | Lu et al., CVPR 2021 | ``lpae`` | yes | anchor search |
| ``lpae-g`` | Lu et al., CVPR 2021 | ``lpae`` | yes | anchor search |
| ``fhn`` | Lu et al., CVPR 2019 | ``bpr`` | yes | — |
| ``outfitnet`` | Lin et al., WWW 2020 | ``outfitnet`` | yes | — |
| ``bi-lstm`` | Han et al., ACM MM 2017 | ``bi-lstm`` | no | same for every user |
| ``type-aware`` | Vasileva et al., ECCV 2018 | ``triplet`` | no | same for every user |
| ``sce-net`` | Tan et al., ICCV 2019 | ``triplet`` | no | same for every user |

Each module's docstring gives the model's equations, the public code it follows and what it leaves
out. :func:`catalogue` is this table as a DataFrame.

**Adding a model is one file**: a module dropped into this folder is imported with the package (see
:func:`import_all`), so the model and objective it registers appear in ``07_baselines``
(``-p model <name>``), in ``05_cold_start`` (if it has a cold-start rule) and in the report.
"""

from __future__ import annotations

import importlib
import pkgutil

import pandas as pd

from ..models.registry import model_class
from . import bilstm, common, fhn, lpae, outfitnet, scenet, type_aware  # noqa: F401  (registration)

# Table 2's order, weakest first as the paper lists them.
BASELINES = ("type-aware", "sce-net", "bi-lstm", "outfitnet", "fhn", "lpae-u", "lpae-g")


def import_all() -> list[str]:
    """Import every module of this folder (the seven above and any a researcher adds), so that
    what they register is known; returns the module names."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


import_all()


def catalogue(names=BASELINES) -> pd.DataFrame:
    """One row per model: its objective, whether it is personalized, its cold-start rule, the
    TrainConfig defaults and search space, and its source."""
    rows = []
    for name in names:
        cls = model_class(name)
        personalized = bool(getattr(cls, "personalized", True))
        cold = getattr(cls, "cold_start_strategy", None) or ("non-personalized" if not personalized else None)
        rows.append({"model": name, "objective": getattr(cls, "objective", None), "personalized": personalized,
                     "cold start": cold, "defaults": dict(getattr(cls, "train_defaults", {})),
                     "search space": dict(getattr(cls, "search_space", {})), "source": getattr(cls, "source", "")})
    return pd.DataFrame(rows)


__all__ = ["BASELINES", "catalogue", "import_all"]
