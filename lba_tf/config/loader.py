"""Loading configs: YAML with ``base:`` inheritance, ``--set`` overrides, types and ranges checked.

A config file is a YAML mapping with the sections of :class:`~lba_tf.config.schema.Config`. It
may name a parent with a top-level ``base: other.yaml`` (relative to the file); the parent is
loaded first and the child's keys are merged over it, so the paper's recipe is written once in
``configs/base.yaml``. Command-line overrides (``--set train.lr=0.05``) are applied last, each
value parsed as YAML.

Every error is a :class:`ConfigError` naming where the value came from (a file or a ``--set``),
the dotted key and what was expected, and it is raised before any work starts.

Examples:

>>> cfg = load_config("configs/synthetic.yaml", overrides=["train.lr=0.05"])
>>> cfg.train.lr
0.05
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
import re
import types
import typing
from typing import Any, Literal

import yaml

from lba_tf.config.schema import Config

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
"""The repository's ``configs/`` folder."""
DEFAULT_CONFIG = CONFIG_DIR / "synthetic.yaml"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the source and the key."""


class _Origins:
    """Remembers which file or override set each dotted key, for error messages."""

    def __init__(self, by_key: dict[str, str] | None = None, default: str = "<config>"):
        self.by_key = dict(by_key or {})
        self.default = default

    def of(self, dotted: str) -> str:
        key = dotted
        while key:
            if key in self.by_key:
                return self.by_key[key]
            key = key.rpartition(".")[0]
        # a section no file has: whatever set a key under it (an override of an unknown key)
        below = [source for k, source in self.by_key.items() if k.startswith(dotted + ".")]
        return below[-1] if below else self.default


def _read_yaml(path: pathlib.Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _merge(dst: dict, src: dict, origins: dict[str, str], source: str, prefix: str = "") -> None:
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, origins, source, dotted + ".")
        else:
            dst[key] = value
            origins[dotted] = source
            for k in [k for k in origins if k.startswith(dotted + ".")]:
                origins[k] = source


def _load_tree(path: pathlib.Path, origins: dict[str, str], seen: tuple = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{path}: 'base' forms a cycle: {chain}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    tree: dict[str, Any] = {}
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: expected a file name, got {base!r}")
        tree = _load_tree(path.parent / base, origins, (*seen, path))
    _merge(tree, data, origins, str(path))
    return tree


def _set_dotted(tree: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            if nxt is None and part not in node:
                nxt = node[part] = {}
            else:
                raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b=value`` into the dotted key and the value parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. train.lr=0.05")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text}: the value is not valid YAML: {err}") from None
    return key, value


def load_config(path: str | pathlib.Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load, merge, override and validate a config.

    Args:
        path: a YAML file; ``None`` means the built-in default, ``configs/synthetic.yaml``.
        overrides: ``"a.b=value"`` strings, applied in order after the file.

    Returns:
        A frozen :class:`Config`.

    Raises:
        ConfigError: a missing file, bad YAML, unknown or missing key, wrong type or out-of-range
            value; the message names the file or override, the key and what was expected.
    """
    path = pathlib.Path(path) if path is not None else DEFAULT_CONFIG
    origins: dict[str, str] = {}
    tree = _load_tree(path, origins)
    tree.setdefault("name", path.stem)
    origins.setdefault("name", str(path))
    for text in overrides:
        key, value = parse_override(text)
        source = f"--set {text}"
        _set_dotted(tree, key, value, source)
        origins[key] = source
    return _build(Config, tree, "", _Origins(origins, default=str(path)))


def save_config(config: Config, path: str | pathlib.Path) -> None:
    """Write the resolved config as YAML (loadable again with :func:`load_config`)."""
    pathlib.Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def replace_config(config: Config, dotted: typing.Mapping[str, Any]) -> Config:
    """A copy of ``config`` with dotted keys replaced, validated as a loaded config is.

    Args:
        config: the config to copy.
        dotted: new values by dotted key, e.g. ``{"train.lr": 0.05}``.

    Raises:
        ConfigError: an unknown key, a wrong type or an out-of-range value, naming
            ``replace(<key>=...)`` as the source.
    """
    raw = config.to_dict()
    origins = {}
    for key, value in dotted.items():
        _set_dotted(raw, key, value, f"replace({key}=...)")
        origins[key] = f"replace({key}=...)"
    return _build(Config, raw, "", _Origins(origins, default="replace()"))


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a section (mapping)"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]


class _Mismatch(Exception):
    pass


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any) -> Any:
    """Convert ``value`` to type ``tp`` or raise _Mismatch. Ints pass as floats; nothing else converts."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        for choice in typing.get_args(tp):
            if value == choice and type(value) is type(choice):
                return choice
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(item, v) for v in value)
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)  # PyYAML reads 1e-3 (no dot or exponent sign) as a string
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported config type {tp}")


def _check_range(fld: dataclasses.Field, value: Any, where: str, source: str) -> None:
    """Raise if ``value`` (or an item of a tuple) is outside the field's ``_range`` metadata."""
    lo, hi, lo_open = (fld.metadata.get(k) for k in ("lo", "hi", "lo_open"))
    if value is None or (lo is None and hi is None):
        return
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        bad = (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi)
        if bad:
            left = "(" if lo_open else "["
            lo_s = "-inf" if lo is None else lo
            hi_s = "inf)" if hi is None else f"{hi}]"
            raise ConfigError(f"{source}: {where}: {v!r} is out of range, expected a value in {left}{lo_s}, {hi_s}")


def _build(cls: type, raw: Any, prefix: str, origins: _Origins) -> Any:
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{origins.of(where)}: {where}: expected a section (mapping), got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            dotted = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"{origins.of(dotted)}: unknown key '{dotted}'{hint}")
    kwargs = {}
    for name, fld in fields.items():
        dotted = f"{prefix}{name}"
        if name not in raw:
            raise ConfigError(f"{origins.of(where)}: missing key '{dotted}' ({_describe(hints[name])})")
        tp, value = hints[name], raw[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, dotted + ".", origins)
            continue
        try:
            kwargs[name] = _coerce(tp, value)
        except _Mismatch:
            raise ConfigError(f"{origins.of(dotted)}: {dotted}: expected {_describe(tp)}, got {value!r}") from None
        _check_range(fld, kwargs[name], dotted, origins.of(dotted))
    return cls(**kwargs)
