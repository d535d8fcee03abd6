"""One training stage, in one process or several (torchrun): what the command line's ``train``
and ``params`` verbs call (:mod:`fndkit.cli`; the timed chain is :mod:`fndkit.bench.chain`).

    python -m fndkit train --run-dir R --stage teacher|student|contrastive|baseline \\
        [--out-name NAME] [-p key=value ...] [-y 'key: [yaml, value]']
    torchrun --nproc_per_node=4 -m fndkit train --run-dir R --stage teacher -p batch_size=128
    python -m fndkit params --stage student        # the parameters and their defaults

**One parameter schema.** ``train --stage KIND`` takes exactly the parameters of the notebook
that trains that stage (02_teacher, 03_student, 04_contrastive, 07_baselines): the stage's
``Params`` dataclass (:mod:`fndkit.stages.training`), which *is* that notebook's ``parameters``
cell (a hygiene test holds them equal); a name it lacks is refused with the list of valid ones,
and ``-p key=value`` values are read as papermill's ``-p`` reads them (``True``, ``False``,
``None``, an int, a float, else a string; ``-y`` takes YAML for lists). Then it calls what the
notebook calls (:func:`fndkit.stages.training.execute`), so one process gives the notebook's
metrics for the same seed.

**Several processes.** Under torchrun each process joins the process group
(:func:`fndkit.distributed.init_from_env`: NCCL on GPUs, gloo on CPU) and trains its share of
every batch; ``batch_size`` is the global batch (see :mod:`fndkit.distributed`). Only rank 0
writes the run folder and prints.
"""

from __future__ import annotations

from typing import Any, Sequence

import yaml

from . import distributed
from .config import ConfigError
from .data.schema import DatasetError
from .repro import seed_everything
from .rundir import RunFolder, StageError
from .stages.training import PARAMS, metrics_line

# Errors whose message says what to do: printed without a traceback.
USER_ERRORS = (ConfigError, StageError, DatasetError, distributed.DistributedError, ValueError, FileNotFoundError)


# ---------------------------------------------------------------------------------------------
# the parameter schema: the notebook's parameters cell


def parse_value(text: str) -> Any:
    """A ``-p`` value as papermill's command line reads it: True / False / None, an int, a float,
    else the string itself."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def notebook_parameters(kind: str) -> dict[str, Any]:
    """Names and default values of the ``parameters`` cell of the notebook behind stage ``kind``
    (its ``Params`` dataclass: no notebook is read, so this works for an installed package)."""
    if kind not in PARAMS:
        raise ConfigError(f"--stage {kind!r} is unknown; choose one of {', '.join(PARAMS)}")
    return PARAMS[kind].defaults()


def describe_parameters(kind: str) -> str:
    """``# kind: notebooks/NN.ipynb`` and one ``name = value`` line per parameter (``params`` verb)."""
    lines = [f"{name} = {value!r}" for name, value in notebook_parameters(kind).items()]
    return "\n".join([f"# {kind}: notebooks/{PARAMS[kind].notebook}.ipynb", *lines])


def stage_parameters(kind: str, run_dir: str, out_name: str | None = None, params: Sequence[str] = (),
                     yaml_params: Sequence[str] = ()) -> dict[str, Any]:
    """The notebook's parameters with ``run_dir``, ``out_name``, ``-p key=value`` and ``-y YAML``
    applied; unknown names refused, naming the valid ones."""
    defaults = notebook_parameters(kind)
    where = f"--stage {kind} (notebooks/{PARAMS[kind].notebook}.ipynb)"
    given: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-p {item!r} must be key=value, e.g. -p epochs=3")
        given[key.strip()] = parse_value(value)
    for text in yaml_params:
        loaded = yaml.safe_load(text)
        if not isinstance(loaded, dict):
            raise ConfigError(f"-y {text!r} must be a YAML mapping, e.g. -y 'snapshot_epochs: [1, 2]'")
        given.update({str(k): v for k, v in loaded.items()})
    if "run_dir" in given:
        raise ConfigError("give the run folder once, with --run-dir (not -p run_dir=...)")
    if out_name is not None:
        if "out_name" not in defaults:
            raise ConfigError(f"--out-name: {where} has no out_name parameter (its folder is always "
                              f"{kind!r})")
        given["out_name"] = out_name
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {where}; valid: "
                          f"{', '.join(sorted(defaults))}")
    return {**defaults, **given, "run_dir": run_dir}


def train(kind: str, params: dict[str, Any], progress: bool = True) -> dict:
    """What the notebook does with ``params``, in this process (or in each torchrun process)."""
    distributed.init_from_env(params.get("device", "auto"))
    try:
        typed = PARAMS[kind].from_dict(params)
        seed_everything(typed.seed)
        plan = typed.plan()
        plan.check()  # a finished run with another config is refused before anything is announced
        if distributed.is_main():
            print(f"training {plan.stage} in {RunFolder(plan.run_dir).root} with {distributed.world_size()} "
                  f"process(es), global batch {plan.cfg.batch_size}")
        metrics = plan.run(progress=progress and distributed.is_main())
        if distributed.is_main():
            print(metrics_line(metrics))
        return metrics
    finally:
        distributed.shutdown()
