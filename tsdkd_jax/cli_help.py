"""`python -m tsdkd_jax.main --help`: the chosen config file's description and variants, and every config field
with its default and comment; and flag parsing whose mistakes end in one line (exit code 2), not a traceback.

The field comments are read from the source of `default_config()` (train/config.py and data/config.py), so
the help cannot drift from the schema.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys

from absl import flags

HELP_FLAGS = ("--help", "-h", "--helpshort", "-?")
_FIELD = re.compile(r"^\s*c\.([\w.]+) = (.+?)(?:\s+#\s*(.*))?$")


def wants_help(args: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in args)


def _config_file(args: list[str], default: str) -> str:
    for i, a in enumerate(args):
        if a.startswith("--config="):
            return a.split("=", 1)[1].split(":", 1)[0]
        if a == "--config" and i + 1 < len(args):
            return args[i + 1].split(":", 1)[0]
    return default


def field_lines() -> list[str]:
    """ "  section.field = default  # comment" for every field of the schema."""
    from tsdkd_jax.data import config as data_config
    from tsdkd_jax.models import lora
    from tsdkd_jax.train import config as train_config

    lines = []
    sections = (("", train_config.default_config), ("data.", data_config.default_config),
                ("lora.", lora.default_config))  # fmt: skip
    for prefix, fn in sections:
        pending = []  # comment lines above a field describe it
        source = inspect.getsource(fn).splitlines()
        for i, raw in enumerate(source):
            text = raw.strip()
            if text.startswith("#"):
                pending.append(text.lstrip("# "))
                continue
            if text.endswith("= (") and i + 1 < len(source):  # a value the formatter wrapped in (...)
                raw = text[:-1] + source[i + 1].strip()
            m = _FIELD.match(raw)
            if m and not m.group(2).startswith(("ml_collections.", "data_lib.", "lora_lib.")):
                comment = " ".join([*pending, m.group(3) or ""]).strip()
                lines.append(f"  {prefix}{m.group(1)} = {m.group(2)}" + (f"  # {comment}" if comment else ""))
            pending = []
    return lines


def _variants(module) -> list[str]:
    names = dict(getattr(module, "VARIANTS", {}))
    common = getattr(module, "common", None)
    names.update(getattr(common, "VARIANTS", {}))
    names.update(getattr(module, "EXTRA", {}))
    return sorted(names)


def text(args: list[str], *, default_config_file: str) -> str:
    path = _config_file(args, default_config_file)
    out = [
        "usage: python -m tsdkd_jax.main --config=CONFIG.py[:variant,...] --workdir=DIR [--config.FIELD=VALUE ...]",
        "       (--helpfull: every absl flag)",
        "",
        f"config file {path}:",
    ]
    try:
        spec = importlib.util.spec_from_file_location("tsdkd_help_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (OSError, SyntaxError, ImportError, AttributeError) as e:
        out.append(f"  (could not read it: {type(e).__name__}: {e})")
    else:
        out += ["  " + line for line in (module.__doc__ or "").strip().splitlines()]
        variants = _variants(module)
        out += ["", f"variants (:{'name' if variants else ''}): {', '.join(variants) or 'none'}"]
    out += ["", "config fields (--config.FIELD=VALUE; defaults before the config file's own values):"]
    return "\n".join(out + field_lines())


def _clean(message: str) -> str:
    """ml_collections wraps KeyErrors into AttributeError(repr(...)): undo the quoting and literal \\n."""
    message = message.strip().strip("'\"")
    return re.sub(r"\s+", " ", message.replace("\\n", " ").replace("\\'", "'")).strip()


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing; a bad flag, config file, variant or override is one line on stderr, exit 2."""
    try:
        return flags.FLAGS(argv)
    except (
        flags.Error
    ) as e:  # a config file's own error arrives with its traceback as text: keep the last line
        message = [line for line in str(e).strip().splitlines() if line.strip()][-1]
        message = re.sub(r"^(ValueError|KeyError|AttributeError|TypeError): ", "", message)
    except (AttributeError, KeyError, ValueError, TypeError, OSError, SyntaxError) as e:
        message = f"bad --config or --config.* override: {_clean(str(e))}"
    if os.environ.get("TSDKD_TRACEBACK"):
        return flags.FLAGS(argv)  # again, for the traceback
    sys.stderr.write(f"tsdkd_jax: error: {message}\n  (python -m tsdkd_jax.main --help lists the fields)\n")
    sys.exit(2)
