"""Every knob of params.yaml says what it does where a user reads it: each key with a value
(outside the named variants, whose keys the config models describe) has a comment on its line
or a comment line directly above it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_]\w*):(?P<rest>.*)$")


def undocumented(text: str) -> list[str]:
    """Dotted names of valued keys with no comment on their line or the line above."""
    missing, stack, previous = [], [], ""
    for line in text.splitlines():
        m = _KEY.match(line)
        if m and not line.lstrip().startswith("#"):
            depth = len(m["indent"]) // 2
            stack = [*stack[:depth], m["key"]]
            value = m["rest"].split("#", 1)[0].strip()
            if stack[0] != "variants" and value and "#" not in m["rest"] and not previous.lstrip().startswith("#"):
                missing.append(".".join(stack))
        if line.strip():
            previous = line
    return missing


def test_the_rule_sees_an_undocumented_key() -> None:
    text = "a:\n  b: 1  # why\n  # why c\n  c: 2\n  d: 3\nvariants:\n  v: {x: 1}\n"
    assert undocumented(text) == ["a.d"]


def test_every_params_key_is_documented() -> None:
    # params-places365.yaml repeats these keys with other values; their meaning is documented here
    missing = undocumented((REPO / "params.yaml").read_text())
    assert not missing, f"params.yaml: add a comment to {missing}"
