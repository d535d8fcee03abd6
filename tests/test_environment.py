"""environment.yml (for conda users) must pin exactly what requirements.txt pins."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def parse_requirements(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.txt line {line!r} is not an exact pin (name==version)"
        pins[name.strip().lower()] = version.strip()
    return pins


def test_environment_matches_requirements():
    reqs = parse_requirements((ROOT / "requirements.txt").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_lists = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: section"
    env_pins = parse_requirements("\n".join(pip_lists[0]))
    assert env_pins == reqs


def test_torch_pins_are_the_local_ones():
    reqs = parse_requirements((ROOT / "requirements.txt").read_text())
    assert reqs["torch"] == "2.14.1" and reqs["torchvision"] == "0.29.1"


def test_parser_rejects_loose_pins():
    import pytest

    with pytest.raises(AssertionError, match="exact pin"):
        parse_requirements("numpy>=2\n")
