"""Issue 12's shape rules for the package: no module over 300 lines, no function over 60 (the field list of
train.config.default_config excepted)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tsdkd_jax"
EXCEPTED = {("train/config.py", "default_config")}


def test_modules_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel, source = path.relative_to(PACKAGE).as_posix(), path.read_text()
        if source.count("\n") > 300:
            too_long.append(f"{rel}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or (rel, node.name) in EXCEPTED:
                continue
            length = node.end_lineno - node.lineno + 1
            if length > 60:
                too_long.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)
