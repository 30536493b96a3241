"""Declare an option once; derive its CLI flag, its environment variable and its help from that.

An option is a dataclass field whose metadata holds an :class:`Option` (help text, kind, how
to parse it from text). :class:`~prompteol.EncoderConfig` declares every encoder option this
way; the CLI (``add_arguments``), the server's ``PROMPTEOL_*`` variables (``values_from_env``),
the training config, the adapter-compatibility check, :meth:`Encoder.derive` and the
fingerprint all read the declaration instead of repeating it (see docs/development.md,
"Adding an encoder option").

Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from .errors import ConfigError

__all__ = [
    "Option",
    "option",
    "options_of",
    "flag_of",
    "env_of",
    "add_arguments",
    "values_from_args",
    "values_from_env",
    "parse_bool",
    "KINDS",
    "OptionValueError",
    "at_least",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "argparse_type",
    "unmet_requirements",
    "SHARED_RANGES",
]

#: ``load``: changing it needs another model load (weights, dtype, device);
#: ``prompt``: how a sentence is rendered and read out (changes the vector, same loaded model);
#: ``runtime``: how the work is done (never changes a vector beyond float rounding)
KINDS = ("load", "prompt", "runtime")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}, got {text!r}")


def _optional_int(text: str) -> int | None:
    return None if str(text).strip().lower() in ("", "none") else int(text)


class OptionValueError(argparse.ArgumentTypeError, ValueError):
    """A value outside an option's declared range: argparse shows this message as it is (a plain
    ``ValueError`` would become "invalid <type> value"), and ``except ValueError`` still catches it."""


def at_least(low: float, kind: type = int, *, above: bool = False) -> Callable[[str], Any]:
    """A parser (an argparse ``type``) of text into ``kind`` that refuses values below ``low`` (and
    ``low`` itself with ``above``), NaN and infinities, with :class:`OptionValueError` saying so.
    Its bounds are kept on it (``.low``, ``.above``, ``.kind``) for the tests that generate bad values."""
    number = "a whole number" if kind is int else "a number"
    bound = "" if low == -math.inf else f" > {low:g}" if above else f" >= {low:g}"

    def parse(text: Any) -> Any:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise OptionValueError(f"should be {number}{bound}, got {text!r}") from None
        if (kind is float and not math.isfinite(value)) or value < low or (above and value == low):
            raise OptionValueError(f"should be {number}{bound}, got {text!r}")
        return value

    parse.__name__ = f"{number}{bound}"
    parse.low, parse.above, parse.kind = low, above, kind  # type: ignore[attr-defined]
    return parse


#: the ranges of the option values that are counts or sizes
positive_int = at_least(1)
non_negative_int = at_least(0)
positive_float = at_least(0.0, float, above=True)
non_negative_float = at_least(0.0, float)

#: options that several commands share, by argparse ``dest``: their flag and range. The CLI's one
#: validation step (:mod:`prompteol.cli.checks`) applies it to every command that has them, so a
#: command whose flag was declared as a plain ``int`` still refuses ``-b 0`` before any work.
SHARED_RANGES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "threads": ("--threads", positive_int),
    "batch_size": ("--batch-size", positive_int),
    "max_batch_tokens": ("--max-batch-tokens", positive_int),
    "chunk_size": ("--chunk-size", positive_int),
    "seeds": ("--seeds", positive_int),
    "micro_batch_size": ("--micro-batch-size", positive_int),
    "eval_batch_size": ("--eval-batch-size", positive_int),
}


def argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse ``type`` whose errors keep their own message (argparse would print
    "invalid parse_demonstration value" for a ``ValueError``); ``int`` and ``float`` say what they want."""
    if isinstance(parse, type) and parse in (int, float):
        return at_least(-math.inf, parse)
    if getattr(parse, "low", None) is not None:  # at_least's parsers already speak argparse
        return parse

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            raise
        except (TypeError, ValueError) as exc:
            raise OptionValueError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


@dataclass(frozen=True)
class Option:
    """How one configuration field is presented to users.

    Attributes:
        help: one line for ``--help`` and the docs (the default is appended automatically).
        kind: one of :data:`KINDS`.
        vector: the value changes the computed vectors, so it is part of the fingerprint.
        flag: the CLI flag (default ``--<name-with-dashes>``); booleans that default to true get
            ``--no-<name>`` instead.
        short: an extra short flag (``-m``).
        choices: the valid values (shown in ``--help`` and checked by argparse).
        parse: text -> value, for flags and environment variables (default: ``str``; booleans
            use :func:`parse_bool`; repeated options parse each item).
        repeat: a list value: the flag is repeated on the command line, the environment
            variable holds a JSON list.
        metavar: the placeholder shown in ``--help``.
        requires: another option that must be on (not ``None``, not empty) for this one to have
            any effect, e.g. ``contrastive_alpha`` requires ``contrastive_layer``; the CLI refuses
            the flag without it (:func:`unmet_requirements`).
    """

    help: str
    kind: str = "prompt"
    vector: bool = True
    flag: str | None = None
    short: str | None = None
    choices: tuple | None = None
    parse: Callable[[str], Any] | None = None
    repeat: bool = False
    metavar: str | None = None
    requires: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind should be one of {KINDS}, got {self.kind!r}")


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **spec: Any) -> Any:
    """A dataclass field declared as a user-facing option (``spec``: the :class:`Option` attributes)."""
    meta = {"option": Option(**spec)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def options_of(cls) -> list[tuple[str, Option, Any]]:
    """``(name, Option, default)`` of every option field of the dataclass ``cls``, in order."""
    out = []
    for f in fields(cls):
        opt = f.metadata.get("option")
        if opt is not None:
            out.append((f.name, opt, _default(f)))
    return out


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def flag_of(name: str, opt: Option, default: Any = None) -> str:
    if opt.flag:
        return opt.flag
    dashed = name.replace("_", "-")
    return f"--no-{dashed}" if default is True else f"--{dashed}"


def env_of(name: str, prefix: str = "PROMPTEOL_") -> str:
    return prefix + name.upper()


def _parser_for(opt: Option, default: Any) -> Callable[[str], Any]:
    if opt.parse is not None:
        return opt.parse
    if isinstance(default, bool):
        return parse_bool
    if isinstance(default, int):
        return int
    return str


def _shown(default: Any) -> str:
    if isinstance(default, (tuple, list)):
        return "none" if not default else ", ".join(map(str, default))
    if hasattr(default, "name"):  # a Template
        return str(default.name)
    return "none" if default is None else str(default)


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    options: Iterable[tuple[str, Option, Any]],
    *,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add one flag per option; every flag defaults to ``None`` ("not given"), so a command (or
    the environment) can tell what the user set; the help shows the effective default."""
    defaults = dict(defaults or {})
    for name, opt, default in options:
        shown = defaults.get(name, default)
        # a bool flag says what differs from the command's effective default (``--no-packing`` where it is on)
        on = shown if isinstance(default, bool) and isinstance(shown, bool) else default
        flags = [flag_of(name, opt, on)] + ([opt.short] if opt.short else [])
        help_text = opt.help.replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": None}
        if isinstance(default, bool) and opt.parse is None:
            kwargs["action"] = "store_false" if on else "store_true"
            kwargs["help"] = f"do not {help_text[0].lower()}{help_text[1:]}" if on else help_text
        else:
            kwargs["type"] = argparse_type(_parser_for(opt, default))
            if opt.repeat:
                kwargs["action"] = "append"
                kwargs["help"] = help_text + " (repeat the flag for several)"
            else:
                kwargs["help"] = f"{help_text} (default: {_shown(shown)})"
            if opt.choices:
                kwargs["choices"] = [c for c in opt.choices if c is not None]
            if opt.metavar:
                kwargs["metavar"] = opt.metavar
        parser.add_argument(*flags, **kwargs)
        if isinstance(default, bool) and opt.parse is None and not opt.flag:
            # the other form too (hidden), so a command line stays valid when a default changes:
            # `--no-fused` where fused is already off, `--packing` where packing is already on
            parser.add_argument(flag_of(name, opt, not on), dest=name, default=None,
                                action="store_true" if on else "store_false", help=argparse.SUPPRESS)  # fmt: skip


def values_from_args(args: argparse.Namespace, options: Iterable[tuple[str, Option, Any]]) -> dict[str, Any]:
    """The options the user gave on the command line (``None`` = not given)."""
    out = {}
    for name, opt, _ in options:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = tuple(value) if opt.repeat else value
    return out


def values_from_env(
    environ: Mapping[str, str], options: Iterable[tuple[str, Option, Any]], prefix: str = "PROMPTEOL_"
) -> dict[str, Any]:
    """Options set by ``<prefix><NAME>`` variables (empty = unset), parsed like their flags."""
    out = {}
    for name, opt, default in options:
        var = env_of(name, prefix)
        raw = environ.get(var, "")
        if raw == "":
            continue
        parse = _parser_for(opt, default)
        try:
            if opt.repeat:
                items = json.loads(raw)
                if not isinstance(items, list):
                    raise ValueError("not a list")
                out[name] = tuple(parse(x) if isinstance(x, str) else x for x in items)
            else:
                out[name] = parse(raw)
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            example = ' e.g. \'["A man is smoking.|Smoking"]\'' if opt.repeat else ""
            what = "a JSON list" + example if opt.repeat else f"a value for {flag_of(name, opt, default)}"
            raise ConfigError(f"{var} should be {what}, got {raw!r} ({exc})") from None
        if opt.choices and not opt.repeat and out[name] not in opt.choices:
            valid = [c for c in opt.choices if c is not None]
            raise ConfigError(f"{var} ({flag_of(name, opt, default)}) should be one of {valid}, got {raw!r}")
    return out


def unmet_requirements(
    values: Mapping[str, Any], given: Iterable[str], options: Iterable[tuple[str, Option, Any]]
) -> list[tuple[str, str]]:
    """``(option, the option it requires)`` for each option in ``given`` (what the user set) whose
    :attr:`Option.requires` is off in ``values`` (the final settings, presets applied)."""
    given = set(given)
    out = []
    for name, opt, _ in options:
        if name in given and opt.requires and values.get(opt.requires) in (None, (), [], ""):
            out.append((name, opt.requires))
    return out


optional_int = _optional_int
