"""The distillation benchmark's plans: one pre-training serves every seed, each distillation
method is searched on validation and trained at its chosen point over seeds, and the report gives
each method's gain over N-pair and its share of the teacher's margin."""

import json

import pandas as pd
import pytest

from fndkit import cli
from fndkit.plans import distill as D
from fndkit.stages.pretrain import weights_path


def test_one_pretraining_serves_every_seed_and_students_need_no_teacher_unless_they_read_it(tmp_path):
    plan = D.Distill(tmp_path, seeds=[0, 1], scale="tiny", device="cpu", epochs=1, methods=["fnd"])
    jobs = plan.plan({"fnd": {"values": {"alpha": 2.0}}})
    pre = [j for j in jobs if j.kind == "pretrain"]
    assert len(pre) == 1 and pre[0].params.seed == 0
    teachers = [j for j in jobs if j.kind == "teacher"]
    assert {j.params.weights for j in teachers} == {str(weights_path(plan.folder(0), "cnn-small"))}
    assert all(t.needs(pre[0]) for t in teachers)
    assert all(j.params.appearance == "rich" for j in jobs if j.kind == "data")
    fnd = [j for j in jobs if j.method == "fnd"]
    assert [j.params.alpha for j in fnd] == [2.0, 2.0] and {j.stage for j in fnd} == {"XS_fnd"}
    npair = next(j for j in jobs if j.method == "npair")
    assert not npair.needs(teachers[0]) and fnd[0].needs(next(t for t in teachers if t.run_dir == fnd[0].run_dir))
    full = D.Distill(tmp_path, seeds=[0], scale="tiny", methods=["fnd"], full=True).plan({"fnd": {"values": {"alpha": 2.0}}})
    stages = {j.stage for j in full}
    assert {"S_fnd", "M_npair", "XS_oracle-drop", "XS_fnd-magnitude", "XS_fnd-cl-erase-replace"} <= stages
    assert next(j for j in full if j.stage == "XS_fnd-magnitude").params.alpha == 2.0
    assert len({j.key for j in full}) == len(full)


def test_search_plan_is_the_transformer_on_the_xs_student(tmp_path):
    plan = D.Distill(tmp_path, seeds=[3, 4], scale="tiny", methods=["fnd"], values={"fnd": {"alpha": [1.25, 2.0]}})
    jobs, trials = plan.search_plan()
    assert {j.seed for j in jobs} == {3} and [t.params.alpha for t in trials["fnd"]] == [1.25, 2.0]
    assert all(t.trial == "fnd" and t.params.backbone == "cnn-tiny" for t in trials["fnd"])


@pytest.mark.slow
def test_distill_command_end_to_end_at_tiny_scale(tmp_path):
    root = tmp_path / "d"
    code = cli.main(["distill", "--root", str(root), "--scale", "tiny", "--seeds", "0", "--epochs", "1",
                     "--device", "cpu", "--methods", "fnd", "--values", "fnd.alpha=1.25,2", "--no-progress"])
    assert code == 0
    table = pd.read_csv(root / "results.csv")
    assert {"XS_npair", "XS_fnd", "teacher"} <= set(table.stage)
    md = (root / "results.md").read_text()
    assert "share of the teacher's margin" in md and "XS_fnd" in md
    record = json.loads((root / "plan.json").read_text())
    assert record["status"] == "finished"
