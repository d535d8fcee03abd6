"""The one command line (fndkit/cli.py): every verb's --help answers without the heavy libraries
and shows its defaults; the tool verbs (train, params, timed-chain, bench, pretrain) refuse a wrong
input with exit code 2 and one line, before any work; their vocabularies are the library's."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fndkit import cli

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("train", "params", "timed-chain", "bench", "pretrain")
HEAVY = ("torch", "optuna", "plotly", "pandas", "numpy", "papermill")


def call(argv, capsys):
    """``python -m fndkit ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:   # argparse: --help (0) and malformed options (2)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def subcommands(parser):
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices


@pytest.fixture(scope="module")
def helps():
    """Every verb's --help, printed by a fresh interpreter, and the heavy modules it imported."""
    script = (
        "import contextlib, io, json, sys\n"
        "from fndkit import cli\n"
        "out = {}\n"
        "for verb in [None, *cli.VERBS]:\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            cli.main(['--help'] if verb is None else [verb, '--help'])\n"
        "        except SystemExit as exc:\n"
        "            assert exc.code == 0, (verb, exc.code)\n"
        "    out[verb or ''] = buf.getvalue()\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps({'helps': out, 'heavy': heavy}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_help_imports_nothing_heavy(helps):
    assert helps["heavy"] == []


def test_top_level_help_lists_every_verb(helps):
    assert set(cli.VERBS) == set(subcommands(cli.parser()))
    listed = helps["helps"][""]
    for verb in cli.VERBS:
        assert re.search(rf"^\s+{re.escape(verb)}\s", listed, re.M), verb


@pytest.mark.parametrize("verb", cli.VERBS)
def test_every_verb_help_shows_its_defaults(helps, verb):
    text = " ".join(helps["helps"][verb].split())
    parser = subcommands(cli.parser())[verb]
    shown = 0
    for action in parser._actions:
        if action.help and action.default not in (None, False, [], "==SUPPRESS==") and action.option_strings:
            wanted = f"(default: {action.default})"   # a list as its repr, as argparse prints it
            assert wanted in text, (verb, action.option_strings, wanted)
            shown += 1
    assert shown > 0 or verb in ("train", "params")   # their options default to nothing


def test_the_tool_vocabularies_are_the_library_s():
    from fndkit.bench import profile as bench
    from fndkit.stages.training import PARAMS

    assert set(cli.TRAINING_STAGES) == set(PARAMS)
    assert (cli.BENCH_JPEG_SCALE, cli.BENCH_CPU_USERS) == (bench.JPEG_SCALE, bench.DEFAULT_CPU_USERS)


# ------------------------------------------------------------------------------------------------
# wrong input: exit 2, one line, nothing done


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def argparse_refusal(err: str, verb: str) -> str:
    """A malformed option: one line naming the verb, the option and the value (no usage dump)."""
    line = one_line(err)
    assert line.startswith(f"error: python -m fndkit {verb}: ") and f"python -m fndkit {verb} --help" in line, err
    return line


@pytest.mark.parametrize("argv,says", [
    (["timed-chain", "--epochs", "0"], "argument --epochs: 0 must be >= 1"),
    (["timed-chain", "--cold-repetitions", "-1"], "argument --cold-repetitions: -1 must be >= 1"),
    (["timed-chain", "--max-steps-per-epoch", "-3"], "argument --max-steps-per-epoch: -3 must be >= 0"),
    (["bench", "--users", "some"], "'some' must be a number of users >= 1, 'all' or 'default'"),
    (["bench", "--steps", "0"], "argument --steps: 0 must be >= 1"),
    (["pretrain", "--epochs", "0"], "argument --epochs: 0 must be >= 1"),
    (["pretrain", "--aux-sets", "-1"], "argument --aux-sets: -1 must be >= 0"),
    (["train", "--stage", "teachr"], "argument --stage: invalid choice: 'teachr'"),
    (["params", "--stage", "nope"], "argument --stage: invalid choice: 'nope'"),
])
def test_malformed_options_are_refused_by_the_parser(argv, says, tmp_path, capsys):
    verb = argv[0]
    required = {"timed-chain": ["--run-dir", str(tmp_path / "run"), "--report", str(tmp_path / "r.json")],
                "pretrain": ["--run-dir", str(tmp_path)], "train": ["--run-dir", str(tmp_path)]}.get(verb, [])
    code, out, err = call([*argv, *required], capsys)
    assert code == 2 and says in argparse_refusal(err, verb)
    assert not (tmp_path / "run").exists() and not (tmp_path / "r.json").exists()


def test_timed_chain_refuses_before_building_data(tmp_path, capsys):
    run, report = tmp_path / "run", tmp_path / "r.json"
    code, _, err = call(["timed-chain", "--run-dir", str(run), "--report", str(report), "--scale", "huge"], capsys)
    assert code == 2 and "huge" in one_line(err)
    (tmp_path / "file").write_text("x")
    code, _, err = call(["timed-chain", "--run-dir", str(tmp_path / "file"), "--report", str(report)], capsys)
    assert code == 2 and "is a file, not a folder" in one_line(err)
    run.mkdir()
    (run / "old.txt").write_text("x")
    code, _, err = call(["timed-chain", "--run-dir", str(run), "--report", str(report), "--scale", "tiny"], capsys)
    assert code == 2 and "needs a fresh run_dir" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "run"] and list(run.iterdir()) == [run / "old.txt"]
    # the library refuses the same bounds before anything is written
    from fndkit.config import ConfigError
    from fndkit.bench.chain import timed_chain

    with pytest.raises(ConfigError, match="epochs=0 must be an integer >= 1"):
        timed_chain(tmp_path / "lib", scale="tiny", epochs=0)
    assert not (tmp_path / "lib").exists()


def test_pretrain_needs_a_run_folder_with_data(tmp_path, capsys):
    code, _, err = call(["pretrain", "--run-dir", "/nonexistent/fndkit"], capsys)
    assert code == 2 and "--run-dir '/nonexistent/fndkit' is not a folder" in one_line(err)
    code, _, err = call(["pretrain", "--run-dir", str(tmp_path), "--epochs", "1"], capsys)
    assert code == 2 and f"no dataset in {tmp_path}" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_train_refusals(tmp_path, capsys, tiny_run_folder):
    (tmp_path / "file").write_text("x")
    code, _, err = call(["train", "--run-dir", str(tmp_path / "file"), "--stage", "teacher"], capsys)
    assert code == 2 and "is a file, not a folder" in one_line(err)
    code, _, err = call(["train", "--run-dir", str(tiny_run_folder), "--stage", "teacher", "-p", "epochs=0"], capsys)
    assert code == 2 and "epochs=0" in one_line(err)
    code, _, err = call(["train", "--run-dir", str(tiny_run_folder), "--stage", "student", "-p", "lam=0.2"], capsys)
    assert code == 2 and "unknown parameter(s) lam for --stage student" in one_line(err)
    assert sorted(p.name for p in tiny_run_folder.iterdir()) == ["data"]   # nothing trained


def test_bench_refuses_an_unknown_scale_before_generating(capsys):
    code, _, err = call(["bench", "--scale", "huge", "--device", "cpu"], capsys)
    assert code == 2 and "scale='huge' is unknown" in one_line(err)


def test_params_prints_the_notebook_cell(capsys):
    from fndkit.stages.training import PARAMS

    code, out, _ = call(["params", "--stage", "student"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0] == f"# student: notebooks/{PARAMS['student'].notebook}.ipynb"
    assert lines[1:] == [f"{k} = {v!r}" for k, v in PARAMS["student"].defaults().items()]


def test_pretrain_writes_the_weights_and_the_probe(tiny_run_folder, tmp_path, capsys):
    import torch

    out, probe = tmp_path / "w.pt", tmp_path / "probe.json"
    code, printed, err = call(["pretrain", "--run-dir", str(tiny_run_folder), "--backbone", "cnn-tiny", "cnn-small",
                               "--epochs", "1", "--aux-sets", "0", "--device", "cpu", "--out", str(out),
                               "--json", str(probe)], capsys)
    assert code == 0, err
    history = json.loads(probe.read_text())
    assert list(history) == ["cnn-tiny", "cnn-small"] and [len(h) for h in history.values()] == [1, 1]
    assert set(history["cnn-tiny"][0]["held_out_accuracy"]) == {"colour", "pattern", "shape"}
    state = torch.load(out)
    assert state and all(k.startswith("features.") for k in state)   # the first backbone's conv layers
    assert printed.count("[pretrain cnn-tiny] epoch 1/1") == 1


@pytest.mark.parametrize("argv, says", [
    (["chain", "--run-dir", "/proc/forbidden"], "cannot create folders in /proc"),
    (["distill", "--root", "FILE/sub", "--scale", "tiny"], "which is a file"),
    (["paper", "table2", "--root", "FILE", "--quick"], "which is a file, not a folder"),
    (["distill", "--epochs", "0"], "argument --epochs: 0 must be >= 1"),
    (["distill", "--workers", "0"], "argument --workers: 0 must be >= 1"),
    (["lab", "fn_rate", "--breadths", "-1"], "--breadths"),
    (["paper", "table2", "--quick", "--readme", "NOPE.md"], "NOPE.md' cannot be read (No such file or directory)"),
    (["distill", "--scale", "tiny", "--readme", "FILE"], "has no distill block: put the lines"),
    (["lab", "fn_rate", "--readme", "FILE"], "`lab` writes no README block"),
])
def test_user_errors_of_the_plan_verbs_are_one_line_and_exit_2(argv, says, tmp_path, capsys):
    """Issue 32's cases 5 and 8: a wrong input exits 2 with one line, before any work."""
    (tmp_path / "FILE").write_text("not a folder")
    argv = [a.replace("FILE", str(tmp_path / "FILE")).replace("NOPE", str(tmp_path / "NOPE")) for a in argv]
    if "--root" not in argv and argv[0] in ("lab", "distill", "paper"):
        argv += ["--root", str(tmp_path / "r")]
    code, out, err = call(argv, capsys)
    assert code == 2 and says in one_line(err), err
    assert not (tmp_path / "r").exists()


def test_a_failed_job_makes_the_verb_exit_1(tmp_path, capsys):
    """`distill` whose jobs fail (a device this machine lacks: its first job that needs one fails)
    names them and exits 1, not 0; an image size the backbones refuse is refused before any work."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: device='cuda' would not fail")
    code, out, err = call(["distill", "--root", str(tmp_path / "d"), "--scale", "tiny", "--epochs", "1",
                           "--device", "cuda", "--methods", "fnd", "--values", "fnd.alpha=2", "--no-progress"], capsys)
    assert code == 1 and "FAILED" in out and "asked for CUDA but none is available" in out, out[-2000:]
    code, out, err = call(["distill", "--root", str(tmp_path / "e"), "--image-size", "7"], capsys)
    assert code == 2 and "--image-size: 7 must be >= 16" in one_line(err) and not (tmp_path / "e").exists()


def test_a_larger_epoch_budget_continues_a_finished_run(tmp_path, capsys, tiny_run_folder):
    """A finished run that used its whole budget, asked again with a larger one, continues from its
    last.pt to the same result as a run trained with that budget from the start (the earlier result
    kept beside it); a run that stopped early is reused; a smaller budget is refused by name."""
    run = str(tiny_run_folder)
    base = ["train", "--run-dir", run, "--stage", "student", "--no-progress", "-p", "loss=npair",
            "-p", "max_steps_per_epoch=2"]
    assert call(base + ["-p", "epochs=1"], capsys)[0] == 0
    first = json.loads((tiny_run_folder / "student_npair" / "history.json").read_text())
    code, out, _ = call(base + ["-p", "epochs=3"], capsys)
    assert code == 0 and "ran its whole 1-epoch budget without stopping early: continuing it to 3 epochs" in out
    folder = tiny_run_folder / "student_npair"
    extended = json.loads((folder / "history.json").read_text())
    assert len(extended) == 3 and extended[0] == first[0]
    assert json.loads((folder / "metrics-epochs1.json").read_text())["epochs_run"] == 1
    assert call(base + ["-p", "epochs=3", "--out-name", "straight"], capsys)[0] == 0
    straight = json.loads((tiny_run_folder / "straight" / "history.json").read_text())
    assert [r["val_auc"] for r in extended] == pytest.approx([r["val_auc"] for r in straight], abs=1e-6)
    metrics = json.loads((folder / "metrics.json").read_text())
    other = json.loads((tiny_run_folder / "straight" / "metrics.json").read_text())
    assert [metrics["test"][p]["auc"] for p in ("random", "hard")] == pytest.approx(
        [other["test"][p]["auc"] for p in ("random", "hard")], abs=1e-6)
    code, _, err = call(base + ["-p", "epochs=2"], capsys)
    assert code != 0 and "epochs: 3 there, 2 here" in err
    metrics["stopped_early"] = True  # as if it had stopped at its plateau: a larger budget changes nothing
    (folder / "metrics.json").write_text(json.dumps(metrics))
    code, out, _ = call(base + ["-p", "epochs=5"], capsys)
    assert code == 0 and "reusing it" in out and len(json.loads((folder / "history.json").read_text())) == 3


def test_a_notebook_kernel_imports_no_torchvision_or_sklearn_until_used():
    """Every notebook's first cell imports the stages and a run folder: torchvision (~2 s, only the
    AlexNet backbones use it) and scikit-learn (~1.5 s, the autoencoder's neighbours and the
    standard NDCG) are imported where they are used, not by every kernel, worker and command."""
    script = ("import sys\nfrom fndkit import stages\nfrom fndkit.rundir import RunFolder\n"
              "from fndkit.results.report import comparison_table\nfrom fndkit.viz.figures import training_figure\n"
              "print(sorted(m for m in ('torchvision', 'sklearn') if m in sys.modules))\n"
              "from fndkit.models.backbones import build_backbone\nbuild_backbone('alexnet-xs', 8)\n"
              "print('torchvision' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["[]", "True"]


def test_a_report_names_the_command_that_trains():
    """`--collect-only --readme README.md` rewrites a block; the block names the call that trains."""
    argv = ["paper", "--verdict", "--collect-only", "--readme", "README.md", "--workers", "2", "--readme=R.md",
            "--no-progress", "--root", "a b"]
    assert cli.reproduce_line(argv) == "python -m fndkit paper --verdict --workers 2 --root 'a b'"
