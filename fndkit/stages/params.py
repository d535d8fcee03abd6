"""The stage contract: each stage's parameters are one frozen dataclass, its notebook's cell.

Every stage module defines ``Params`` (a subclass of :class:`StageParams`) whose fields *are* the
names and defaults of its notebook's ``parameters`` cell (``tests/test_notebook_hygiene.py`` fails
when the two disagree), and ``execute(params) -> metrics``, which seeds, runs the stage through
the run folder's reuse / refuse / resume rules and writes its ``metrics.json``. A notebook is its
parameters cell, one line ``params = Params.from_namespace(globals())``, the stage call and a
figure; the command line and the plan executor build the same ``Params`` and call the same
``execute``, so the three paths cannot drift apart.

Validation: a name that is not a field is refused with the list of valid ones; a non-finite
number (``inf``, ``nan``) in any field is refused here, naming it; other values are
checked where the stage turns them into its configs (:class:`~fndkit.config.TrainConfig`,
:class:`~fndkit.config.DataConfig`), with the errors those have always given.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from ..config import ConfigError, check_finite


@dataclass(frozen=True)
class StageParams:
    """Base of every stage's ``Params``: ``kind`` names the stage kind, ``notebook`` its notebook."""

    kind: ClassVar[str] = ""
    notebook: ClassVar[str] = ""

    def __post_init__(self):
        run_dir = getattr(self, "run_dir", None)
        if isinstance(run_dir, os.PathLike) or hasattr(run_dir, "root"):
            # a RunFolder or a Path: kept as the string a notebook's cell would hold
            object.__setattr__(self, "run_dir", str(getattr(run_dir, "root", run_dir)))
        for f in dataclasses.fields(self):  # inf / nan never reach a stage (tau=inf trained a constant loss)
            check_finite(f.name, getattr(self, f.name))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default (a fresh copy for list defaults)."""
        out = {}
        for f in dataclasses.fields(cls):
            out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        """``Params`` from a mapping of parameter names; an unknown name is refused by name."""
        names = cls.field_names()
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for the {cls.kind} stage "
                              f"(notebooks/{cls.notebook}.ipynb); valid: {', '.join(sorted(names))}")
        return cls(**dict(values))

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]):
        """``Params`` from a notebook's globals: the fields' names are looked up there (what the
        parameters cell and papermill's injected cell defined); other names are ignored."""
        return cls(**{name: namespace[name] for name in cls.field_names() if name in namespace})

    def to_dict(self) -> dict[str, Any]:
        """The parameters as papermill takes them (``-p`` names and values)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def notebook_parameters(self) -> dict[str, Any]:
        """:meth:`to_dict` as an executed notebook should carry it: ``run_dir`` as the user gave
        it (:func:`~fndkit.rundir.portable_path`: relative to the project stays relative), so the
        notebook re-runs against the same folder in a moved or copied checkout."""
        from ..rundir import portable_path

        values = self.to_dict()
        if isinstance(values.get("run_dir"), (str, os.PathLike)):
            values["run_dir"] = portable_path(values["run_dir"])
        return values

    def replace(self, **changes):
        """A copy with ``changes``; an unknown name is refused as in :meth:`from_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})
