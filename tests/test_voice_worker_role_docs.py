"""roles/voice_worker: defaults/main.yml, meta/argument_specs.yml and README.md agree."""

from __future__ import annotations

from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[1] / "roles/voice_worker"


def test_every_variable_is_specified_and_documented() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    readme = (ROLE / "README.md").read_text()
    assert list(defaults) == list(options)  # same variables, same order
    for name, value in defaults.items():
        assert name.startswith("voice_worker_"), name
        assert options[name].get("description"), name
        assert f"| `{name}` |" in readme, name
        # templated defaults (computed on the control node) are described, not repeated
        if not (isinstance(value, str) and "{{" in value):
            assert options[name].get("default") == value, name
        if "choices" in options[name]:
            assert value in options[name]["choices"], name
