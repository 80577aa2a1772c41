"""Rule-base validation: the bundled default is docs/design.md#fuzzy-controller, and every kind of bad cell is named."""

from __future__ import annotations

import copy
import json
from importlib import resources

import pytest

from scorer.core.rules import RULE_COUNT, RulesError, SetDef, parse_rulebase
from scorer.rulefile import load_rules


@pytest.fixture(scope="module")
def default_doc() -> dict:
    return json.loads(resources.files("scorer").joinpath("rules_default.json").read_text())


def _row(doc: dict, cpu: str, psi: str, friction: str) -> dict:
    return next(r for r in doc["rules"] if (r["cpu"], r["psi"], r["friction"]) == (cpu, psi, friction))


def test_default_is_the_spec_tables():
    rb = load_rules()
    assert rb.cpu == {"normal": SetDef("trap", (0, 0, 60, 80)), "high": SetDef("trap", (60, 80, 100, 100))}
    assert rb.psi["med"] == SetDef("tri", (20, 50, 80))
    assert rb.friction["short"] == SetDef("gauss", (25, 12.5))
    assert rb.friction["under"] == SetDef("trap", (-150, -150, 0, 25))
    assert rb.energy["mod"] == SetDef("gauss", (40, 15))
    assert list(rb.output) == ["under", "short", "mod", "long"]
    assert dict(rb.ranges) == {"cpu": (0, 100), "psi": (0, 100), "friction": (-150, 150), "energy": (0, 100),
                               "output": (0, 100)}
    assert len(rb.rule_output) == RULE_COUNT == 72
    assert rb.universe.tolist() == list(range(101))
    # Spot cells of the table of docs/design.md#fuzzy-controller (rows cpu/psi/friction, columns energy short/mod/long).
    cells = [rb.rule_names(r) for r in range(72)]
    lookup = {(c["cpu"], c["psi"], c["friction"], c["energy"]): c["output"] for c in cells}
    assert lookup[("normal", "low", "under", "short")] == "under"
    assert lookup[("normal", "low", "long", "short")] == "mod"
    assert lookup[("high", "med", "short", "long")] == "mod"
    assert lookup[("high", "low", "under", "long")] == "short"
    assert lookup[("normal", "med", "mod", "long")] == "long"
    assert sum(v == "long" for v in lookup.values()) == 36  # L cells of docs/design.md's rule table


def _mutations() -> dict:
    """name: (mutate(doc), expected message fragment)."""

    def set_(path, value):
        def mutate(doc):
            target = doc
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        return mutate

    def delete(path):
        def mutate(doc):
            target = doc
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]
        return mutate

    def cell(cpu, psi, friction, energy, value):
        return lambda doc: _row(doc, cpu, psi, friction)["energy"].__setitem__(energy, value)

    def drop_cell(cpu, psi, friction, energy):
        return lambda doc: _row(doc, cpu, psi, friction)["energy"].pop(energy)

    def duplicate_row(doc):
        doc["rules"].append(copy.deepcopy(doc["rules"][5]))

    v = "variables"
    return {
        "unknown output set": (cell("high", "med", "long", "mod", "huge"),
                               "rules[cpu=high, psi=med, friction=long, energy=mod]: unknown output set 'huge'"),
        "missing cell": (drop_cell("high", "med", "long", "mod"),
                         "rules[cpu=high, psi=med, friction=long, energy=mod]: missing"),
        "duplicate cell": (duplicate_row,
                           "rules[cpu=normal, psi=med, friction=short, energy=short]: given more than once"),
        "unknown energy set": (cell("normal", "low", "under", "medium", "short"),
                               "rules[cpu=normal, psi=low, friction=under, energy=medium]: unknown energy set"),
        "unknown antecedent set": (lambda doc: doc["rules"][0].__setitem__("psi", "lo"),
                                   "rules[cpu=normal, psi=lo, friction=under]: unknown psi set 'lo'"),
        "rules not a list": (set_(["rules"], {}), "rules: expected a list"),
        "missing variable": (delete([v, "energy"]), "variables.energy: missing variable"),
        "unknown variable": (set_([v, "memory"], {}), "variables.memory: unknown variable"),
        "missing set": (delete([v, "psi", "sets", "med"]), "variables.psi.med: missing set"),
        "unknown set": (set_([v, "psi", "sets", "medium"], {"fn": "tri", "params": [1, 2, 3]}),
                        "variables.psi.medium: unknown set"),
        "unknown function": (set_([v, "psi", "sets", "med", "fn"], "bell"),
                             "variables.psi.med: unknown function 'bell'"),
        "parameter count": (set_([v, "cpu", "sets", "high", "params"], [60, 80, 100]),
                            "variables.cpu.high: trap takes 4 parameters"),
        "trap not ordered": (set_([v, "cpu", "sets", "high", "params"], [60, 80, 70, 100]),
                             "variables.cpu.high: parameters not ordered"),
        "tri not ordered": (set_([v, "psi", "sets", "med", "params"], [50, 20, 80]),
                            "variables.psi.med: parameters not ordered"),
        "tri degenerate": (set_([v, "psi", "sets", "med", "params"], [20, 20, 80]),
                           "variables.psi.med: parameters not ordered"),
        "gauss sigma 0": (set_([v, "friction", "sets", "short", "params"], [25, 0]),
                          "variables.friction.short: sigma must be > 0"),
        "non-number parameter": (set_([v, "energy", "sets", "mod", "params"], [40, "15"]),
                                 "variables.energy.mod: parameters must be finite numbers"),
        "boolean parameter": (set_([v, "energy", "sets", "mod", "params"], [40, True]),
                              "variables.energy.mod: parameters must be finite numbers"),
        "range reversed": (set_([v, "friction", "range"], [150, -150]), "variables.friction.range: low must be < high"),
        "range missing": (delete([v, "cpu", "range"]), "variables.cpu: missing 'range'"),
        "output range not integers": (set_([v, "output", "range"], [0, 99.5]),
                                      "variables.output.range: the output universe is integers"),
        "unknown top-level key": (set_(["rule"], []), "rule: unknown key"),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("case", MUTATIONS)
def test_bad_cell_is_named(default_doc, case):
    mutate, expected = MUTATIONS[case]
    doc = copy.deepcopy(default_doc)
    mutate(doc)
    with pytest.raises(RulesError) as err:
        parse_rulebase(doc)
    assert expected in str(err.value)


def test_rules_error_is_a_value_error():
    assert issubclass(RulesError, ValueError)


def test_override_file_loads(tmp_path, default_doc):
    doc = copy.deepcopy(default_doc)
    _row(doc, "normal", "low", "under")["energy"]["short"] = "long"
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(doc))
    rb = load_rules(path)
    assert rb.rule_names(0)["output"] == "long"
    assert load_rules(str(path)).rule_names(0) == rb.rule_names(0)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "cannot read"),
        ("{not json", "invalid JSON: line 1 column 2"),
        ('{"variables": {}, "rules": []}', "variables.cpu: missing variable"),
        ("[]", "rule base: expected an object"),
    ],
    ids=["missing file", "invalid JSON", "invalid content", "not an object"],
)
def test_rule_file_errors_name_the_file(tmp_path, content, expected):
    path = tmp_path / "my-rules.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RulesError) as err:
        load_rules(path)
    assert str(err.value).startswith(str(path) + ": ")
    assert expected in str(err.value)


def test_rulebase_arrays_are_read_only():
    rb = load_rules()
    with pytest.raises(ValueError):
        rb.output_curves[0, 0] = 1.0
    with pytest.raises(ValueError):
        rb.rule_output[0] = 3
