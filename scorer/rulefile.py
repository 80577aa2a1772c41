"""Load the rule base: the bundled default or an operator's file (FUZZY_RULES_FILE), validated.

The shell around scorer.core.rules: it reads bytes and decodes JSON, the core validates. Every
failure, from a missing file to one bad rule cell, is a RulesError that starts with the file
name, so a service refusing to start (or the replay tool) says which file to fix.
"""

from __future__ import annotations

import json
import os
from importlib import resources

from scorer.core.rules import RuleBase, RulesError, parse_rulebase

DEFAULT_NAME = "rules_default.json"


def load_rules(path: str | os.PathLike | None = None) -> RuleBase:
    """The rule base in `path` (JSON, layout in scorer.core.rules), or the bundled default when None."""
    if path is None:
        name = f"bundled {DEFAULT_NAME}"
        try:
            text = resources.files("scorer").joinpath(DEFAULT_NAME).read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesError(f"{name}: cannot read: {exc.strerror or exc}") from None
    else:
        name = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise RulesError(f"{name}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise RulesError(f"{name}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RulesError(f"{name}: invalid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        return parse_rulebase(data)
    except RulesError as exc:
        raise RulesError(f"{name}: {exc}") from None
