"""Recipe tables checked against schemas: every key known, typed and range-checked, and a mistake one error
line naming the key (and the closest known key, for typos).

A module of its own because the recipe's schemas (s2emu/recipe.py) and each data kind's (host/datasets.py) are
checked by it, and the recipe imports the data kinds.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from .errors import RecipeError

# A schema leaf is (type, default, check); check(value) -> error text or None. default REQUIRED means must be given.
REQUIRED = object()


def _positive(v):
    return None if v > 0 else "must be > 0"


def _non_negative(v):
    return None if v >= 0 else "must be >= 0"


def _one_of(*choices):
    def check(v):
        return None if v in choices else f"must be one of {', '.join(map(repr, choices))}"
    return check


def _in_range(lo, hi):
    def check(v):
        return None if lo <= v <= hi else f"must be in [{lo}, {hi}]"
    return check


def _type_name(t) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            list: "a list", dict: "a table"}[t]


def _check_leaf(value, typ, path):
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
    if typ is float and ok and not math.isfinite(value):
        raise RecipeError(f"'{path}' must be a finite number, got {value}")
    if not ok:
        raise RecipeError(f"'{path}' must be {_type_name(typ)}, got {type(value).__name__} {value!r}")
    return value


def check_table(doc: Any, schema: dict, path: str) -> dict:
    """Validate one TOML table against a schema; returns it with defaults filled in."""
    where = path or "recipe"
    if not isinstance(doc, dict):
        raise RecipeError(f"'{where}' must be a table, got {type(doc).__name__}")
    for key in doc:
        if key not in schema:
            hint = difflib.get_close_matches(key, list(schema), n=1)
            did = f" (did you mean '{hint[0]}'?)" if hint else f"; known keys: {', '.join(schema)}"
            raise RecipeError(f"unknown key '{path + '.' if path else ''}{key}'{did}")
    out = {}
    for key, spec in schema.items():
        kpath = f"{path}.{key}" if path else key
        if isinstance(spec, dict):
            out[key] = check_table(doc.get(key, {}), spec, kpath)
        elif isinstance(spec, list):
            items = doc.get(key, [])
            if not isinstance(items, list):
                raise RecipeError(f"'{kpath}' must be an array of tables ([[{kpath}]])")
            out[key] = [check_table(item, spec[0], f"{kpath}[{i}]") for i, item in enumerate(items)]
        elif spec is None:
            out[key] = doc.get(key)
        else:
            typ, default, check = spec
            if key not in doc:
                if default is REQUIRED:
                    raise RecipeError(f"missing required key '{kpath}'")
                out[key] = default
                continue
            value = _check_leaf(doc[key], typ, kpath)
            problem = check(value) if check else None
            if problem:
                raise RecipeError(f"'{kpath}' {problem}, got {value!r}")
            out[key] = value
    return out
