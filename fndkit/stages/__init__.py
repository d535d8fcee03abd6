"""What each notebook does, as library calls: one module per notebook stage, each with ``run``.

- :mod:`.data` (00_data) — build or read the dataset into ``run_dir/data``;
- :mod:`.autoencoder` (01_autoencoder) — the *replace* neighbour table;
- :mod:`.training` (02_teacher, 03_student, 04_contrastive, 07_baselines) — train one model;
- :mod:`.cold_start` (05_cold_start) — the Table-3 experiment;
- :mod:`.false_negatives` (08_false_negatives) — the teacher's flags against the ground truth.

Everything here is testable without a kernel; notebooks stay a stage call, a figure and a table.
The run folder itself (paths, reuse-or-refuse, loading) is :mod:`fndkit.rundir`.
"""

from ..rundir import RunFolder, StageError
from . import autoencoder, cold_start, data, false_negatives, training
from .data import affinity_table, build_dataset
from .training import (default_contrastive_name, default_student_name, student_config, teacher_config,
                       train_config)

# The names notebooks and scripts have called since the first release.
prepare_data = data.run
data_summary = data.summary
run_autoencoder = autoencoder.run
train_stage = training.run
run_cold_start = cold_start.run


def load_run_dataset(run_dir):
    """The dataset 00_data wrote into ``run_dir`` (see :meth:`RunFolder.dataset`)."""
    return RunFolder(run_dir).dataset()


__all__ = ["RunFolder", "StageError", "affinity_table", "autoencoder", "build_dataset", "cold_start",
           "data", "data_summary", "default_contrastive_name", "default_student_name", "false_negatives",
           "load_run_dataset", "prepare_data", "run_autoencoder", "run_cold_start", "student_config",
           "teacher_config", "train_config", "train_stage", "training"]
