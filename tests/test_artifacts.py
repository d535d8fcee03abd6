"""Atomic writes leave nothing behind on failure; checkpoints rebuild from the file alone."""

import json

import pytest
import torch

from fndkit.artifacts import atomic_path, load_checkpoint, read_json, save_checkpoint, write_json


def test_write_json_round_trip(tmp_path):
    path = write_json(tmp_path / "a" / "m.json", {"x": 1.5, "y": [1, 2]})
    assert read_json(path) == {"x": 1.5, "y": [1, 2]}


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "m.json"
    target.write_text('{"old": true}')
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_path_replaces_folder(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_checkpoint_round_trip(tmp_path):
    layer = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "c.pt", state_dict=layer.state_dict(), config={"dim": 2},
                    metrics={"auc": 0.5})
    payload = load_checkpoint(tmp_path / "c.pt")
    assert payload["config"] == {"dim": 2} and payload["metrics"] == {"auc": 0.5}
    other = torch.nn.Linear(3, 2)
    other.load_state_dict(payload["state_dict"])
    assert torch.equal(other.weight, layer.weight)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="02_teacher"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an fndkit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
