"""The training-curve figure: the flagged fraction on its own axis (not flat on the AUC's 0–1
scale) and the best epoch marked where the checkpoint kept it."""

import pytest

from fndkit.viz.figures import best_epoch, history_figure


def _history(aucs, flagged=None):
    rows = [{"epoch": e + 1, "loss": 2.0 - 0.1 * e, "val_auc": a} for e, a in enumerate(aucs)]
    if flagged is not None:
        for row, f in zip(rows, flagged):
            row["flagged_fraction"] = f
    return rows


def test_best_epoch_is_the_first_highest_validation_auc():
    assert best_epoch(_history([0.6, 0.8, 0.8, 0.7])) == 2
    assert best_epoch(_history([0.9])) == 1
    assert best_epoch([]) is None


@pytest.mark.parametrize("flagged", [None, [0.0031, 0.0029, 0.0034, 0.0030]])
def test_history_figure_axes_and_best_epoch_line(flagged):
    fig = history_figure(_history([0.6, 0.8, 0.8, 0.7], flagged), "t")
    by_name = {t.name: t for t in fig.data}
    loss, auc = by_name["train loss"], by_name["val AUC"]
    assert loss.yaxis != auc.yaxis  # the AUC on its own (right) axis
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert lines and all(s.x0 == s.x1 == 2 for s in lines)  # the best epoch, in every panel
    assert any("best epoch 2 (val AUC 0.8000)" in a.text for a in fig.layout.annotations)
    if flagged is None:
        assert "flagged false negatives" not in by_name
        return
    flags = by_name["flagged false negatives"]
    assert flags.yaxis not in (loss.yaxis, auc.yaxis)  # its own panel and scale, not the AUC's 0–1
    assert len(lines) == 2  # one line per panel
    axis = fig.layout["yaxis" + flags.yaxis[1:]]
    assert axis.range is None and axis.tickformat == ".2%"
    assert list(flags.y) == flagged
