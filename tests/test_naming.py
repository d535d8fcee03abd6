"""Stage folders are named in one place (fndkit/stages/naming.py): no other module of the package
spells a stage folder's name pattern, and nothing parses a parameter back out of a name."""

import re
from pathlib import Path

import pytest

from fndkit.stages import naming

PACKAGE = Path(__file__).resolve().parent.parent / "fndkit"
# how a stage folder's name used to be spelled by hand in five modules
PATTERNS = [r'f"student_\{', r'"search", method', r'f"search-\{method', r'-alpha\{', r'f"seed\{', r'f"breadth\{', r'"-hard"', r'f"\{size\}_',
            r'removeprefix\("XS_fnd-alpha', r'\+= f"-lam', r'f"contrastive-']


@pytest.mark.parametrize("pattern", PATTERNS)
def test_only_naming_spells_a_stage_folder(pattern):
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name != "naming.py" and re.search(pattern, p.read_text())]
    assert not offenders, f"{pattern!r} spelled outside stages/naming.py: {offenders}"


def test_the_patterns_would_catch_a_hand_spelled_name():
    assert re.search(PATTERNS[0], 'name = f"student_{loss}"') and re.search(r'-alpha\{', 'x + f"-alpha{a:g}"')
    assert re.search(PATTERNS[2], 'f"search-{method}-{point}"')


def test_names_from_values():
    assert naming.trial("fnd-cl", {"lam": 0.2, "augmentations": "erase,replace"}) == "search-fnd-cl-lam0.2-augmentationserase+replace"
    assert naming.variant("student_fnd", alpha=2.0) == "student_fnd-alpha2"
    assert naming.variant("contrastive", augmentations="erase,erase") == "contrastive-erase-erase"
    assert naming.replicate("XS_kd", 3) == "XS_kd-seed3" and naming.sized("XS", "npair") == "XS_npair"
    assert naming.method_stage("fnd") == "student_fnd" and naming.method_stage("fnd-cl", hard=True) == "contrastive-hard"
    assert naming.method_stage("lpae-u") == "lpae-u" and naming.method_stage("kd") == "student_kd"
