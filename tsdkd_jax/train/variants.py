"""The one parser of config overrides: dotted `section.field` keys, and the comma-separated variants of an
experiment file's argument (`configs/x.py:gkd,smoke,optim.lr=1e-6`).

Experiment files (configs/*.py) and the testbed's stages set fields through these, so a mistyped field is an
error naming the file and the field, never a silently added one.
"""

from __future__ import annotations

import ast


def parse_value(text: str):
    """A Python literal (1e-6, True, (1, 2)) or else the bare string (method=gkd)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def set_field(config, key: str, value, source: str) -> None:
    """config[section...][field] = value for a dotted key naming an existing field."""
    *sections, field = key.split(".")
    node = config
    for section in sections:
        if section not in node:
            raise ValueError(f"{source}: unknown field {key!r}")
        node = node[section]
    if field not in node:
        raise ValueError(f"{source}: unknown field {key!r}")
    node[field] = value


def apply(config, overrides: dict, source: str):
    """Sets every {dotted key: value} of `overrides`, in order; returns config."""
    for key, value in overrides.items():
        set_field(config, key, value, source)
    return config


def apply_variants(config, arg: str | None, table: dict, source: str, bare: dict | None = None):
    """Applies `arg`'s comma-separated variants in order: names of `table` ({name: {dotted key: value}}) or
    `field=value` overrides, where `bare` maps a field written without its section to that section."""
    bare = bare or {}
    for name in filter(None, (arg or "").split(",")):
        name = name.strip()
        if "=" in name:
            key, value = (s.strip() for s in name.split("=", 1))
            if "." not in key and key in bare:
                key = f"{bare[key]}.{key}".lstrip(".")
            set_field(config, key, parse_value(value), source)
        elif name in table:
            apply(config, table[name], source)
        else:
            raise ValueError(f"{source}: unknown variant {name!r}; known: {sorted(table)} or field=value")
    return config
