"""The distillation evidence as two plans of jobs: α* is chosen on validation between them."""

from fndkit import distill
from fndkit.stages.pretrain import weights_path


def test_first_plan_needs_no_alpha_star_and_the_teacher_reads_the_pretrained_weights(tmp_path):
    jobs = distill.plan(tmp_path, seeds=[0, 1], scale="tiny", device="cpu", epochs=1)
    per_seed = [j for j in jobs if j.params.seed == 0]
    assert [j.label for j in per_seed][:3] == ["data", "pretrain", "teacher"]
    assert per_seed[0].params.appearance == "rich"
    teacher = next(j for j in per_seed if j.label == "teacher")
    assert teacher.params.weights == str(weights_path(distill.seed_dir(tmp_path, 0), "cnn-small"))
    grid = {j.params.alpha for j in per_seed if j.label.startswith("XS_fnd-alpha")}
    assert grid == set(distill.ALPHAS)
    students = [j for j in per_seed if j.kind == "student" and not j.label.startswith("XS_fnd-alpha")]
    assert all(j.params.alpha is None for j in students)            # nothing else uses an α yet
    assert len({j.key for j in jobs}) == len(jobs)                    # no job twice


def test_alpha_star_is_the_validation_argmax_and_reaches_the_second_plan(tmp_path):
    results = {0: {"XS_fnd-alpha1.25": {"best_val_auc": 0.80}, "XS_fnd-alpha2": {"best_val_auc": 0.83},
                   "XS_fnd-alpha3": {"best_val_auc": 0.81}, "XS_npair": {"best_val_auc": 0.99}}}
    assert distill.chosen_alpha(results, 0) == 2.0
    assert distill.chosen_alpha(results, 1) is None
    second = distill.plan_with_alpha(tmp_path, {0: 2.0}, scale="tiny", device="cpu")
    assert second and all(j.params.alpha == 2.0 for j in second)
    assert {j.label for j in second} >= {"S_fnd", "M_fnd", "XS_fnd-magnitude", "XS_fnd-cl-erase-replace"}
