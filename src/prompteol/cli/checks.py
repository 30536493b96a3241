"""The CLI's one validation step: every option of the command checked before anything heavy.

:func:`check_args` runs in :func:`prompteol.cli.main.main` after argparse and before the command,
so before any input is read, any model is resolved or loaded and any data is verified. A problem
is a :class:`~prompteol.errors.ConfigError` (one ``error:`` line, exit 2). What it checks, from
the options' declarations:

- ranges: argparse already refused what a flag's declared type refuses (``positive_int`` and
  friends, :mod:`prompteol.options`); :data:`~prompteol.options.SHARED_RANGES` covers the shared
  options (``--batch-size``, ``--threads``, ...) of every command, whatever their flag's type;
- the cache folder (``--cache-dir`` or ``PROMPTEOL_CACHE``): a folder, or one that can be created;
- the encoder options of the commands that take them: the :class:`~prompteol.EncoderConfig`
  they give is built (every field validated, presets resolved), each option that needs another
  (:attr:`Option.requires`) has it, and ``--device`` names a device this torch can use;
- the command's own checks (``args.check``, set by the command with ``set_defaults(check=...)``).

Nothing here imports torch unless ``--device`` names something other than ``cpu`` or ``auto``.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ..errors import ConfigError

__all__ = ["check_args", "check_encoder_config", "check_device", "check_cache_dir", "flag_message"]

#: the torch device strings a user may give (``auto``: CUDA when available, else the CPU)
_DEVICE = re.compile(r"(cpu|cuda|mps|xpu)(?::(\d+))?")
_TORCH_INSTALL = "https://pytorch.org/get-started/locally/"


def check_args(args: argparse.Namespace) -> None:
    """Everything the command line says, checked before the command runs (see the module docstring)."""
    from ..options import SHARED_RANGES

    for dest, (flag, parse) in SHARED_RANGES.items():
        value = getattr(args, dest, None)
        if value is not None:
            try:
                parse(str(value))
            except ValueError as exc:
                raise ConfigError(f"{flag} {exc}") from None
    check_cache_dir(getattr(args, "cache_dir", None))
    if getattr(args, "encoder_exclude", None) is not None:  # the command takes encoder options
        check_encoder_flags(args)
    device = getattr(args, "device", None)
    ray_address = getattr(args, "address", None) or os.environ.get("RAY_ADDRESS")
    remote = getattr(args, "engine", None) == "ray" and ray_address
    if device is not None and not remote:  # (a Ray cluster's actors have devices this machine may not have)
        check_device(device)
    check = getattr(args, "check", None)
    if callable(check):
        check(args)


def check_encoder_flags(args: argparse.Namespace) -> None:
    """The encoder options given as flags: the config they make, the options they need."""
    from .common import encoder_config_from_args, encoder_values

    given = encoder_values(args, args.encoder_exclude)
    # a search grid (`methods search --grid embed_filter=2,4`) sets options on top of the flags
    grid = {str(g).partition("=")[0].strip().replace("-", "_") for g in getattr(args, "grid", None) or ()}
    if "model" in args.encoder_exclude:  # the command builds a config per model (scale): check what was given
        if not given.get("preset"):  # (a method preset's options depend on the model)
            check_encoder_config(given, given, also_on=grid)
        return
    try:
        config = encoder_config_from_args(args, **getattr(args, "encoder_defaults", {}))
    except ConfigError as exc:
        raise ConfigError(flag_message(str(exc))) from None
    check_encoder_config(config, given, also_on=grid)


def check_encoder_config(config, given, also_on=()) -> None:
    """Every option in ``given`` (the names the user set, as flags or variables) that needs another
    has it in ``config`` (an :class:`~prompteol.EncoderConfig`, or a mapping of option values) or
    in ``also_on`` (options a search grid sets)."""
    from ..encoder.config import encoder_options
    from ..options import flag_of, unmet_requirements

    options = encoder_options()
    specs = {name: (opt, default) for name, opt, default in options}
    if isinstance(config, dict):
        values = dict(config)
    else:
        values = {name: getattr(config, name, None) for name in specs}
    values.update({name: True for name in also_on})
    for name, needed in unmet_requirements(values, given, options):
        flag = flag_of(name, *specs[name])
        need_opt, need_default = specs[needed]
        need = flag_of(needed, need_opt, need_default)
        hint = f"{need} {need_opt.metavar}" if need_opt.metavar else need
        raise ConfigError(f"{flag} has no effect without {need} (it is off); add {hint}, or drop {flag}")


def flag_message(message: str) -> str:
    """A config error that starts with a field name, starting with its flag instead (``max_length
    should be ...`` -> ``--max-length should be ...``)."""
    from ..encoder.config import encoder_options
    from ..options import flag_of

    for name, opt, default in sorted(encoder_options(), key=lambda o: -len(o[0])):
        if message.startswith(name + " "):
            return flag_of(name, opt, default if not isinstance(default, bool) else False) + message[len(name):]
    return message


def check_device(device: str, flag: str = "--device") -> None:
    """``device`` is one this torch can use, else a :class:`ConfigError` in one line with what to do."""
    device = str(device).strip()
    if device in ("cpu", "auto"):
        return
    m = _DEVICE.fullmatch(device)
    if m is None:
        raise ConfigError(f"{flag} {device!r} is not a device; use cpu, cuda, cuda:N (the N-th GPU), mps or auto "
                          "(CUDA when available)")  # fmt: skip
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        return
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                raise ConfigError(f"{flag} {device}: this torch ({torch.__version__}) is a CPU-only build; install "
                                  f"a CUDA build of torch (the command for your system is on {_TORCH_INSTALL}) "
                                  "or use --device cpu")  # fmt: skip
            raise ConfigError(f"{flag} {device}: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU "
                              "(is the NVIDIA driver loaded? is CUDA_VISIBLE_DEVICES empty?); or use --device cpu")  # fmt: skip
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            have = "cuda:0" if count == 1 else f"cuda:0 .. cuda:{count - 1}"
            raise ConfigError(f"{flag} {device}: this machine has {count} GPU{'s' if count != 1 else ''} ({have})")
        return
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{flag} {device}: Apple's Metal (MPS) is not available to this torch "
                              f"({torch.__version__}; it needs macOS on Apple silicon); use --device cpu")  # fmt: skip
        return
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not xpu.is_available():
        raise ConfigError(f"{flag} {device}: no Intel GPU (XPU) is available to this torch ({torch.__version__}); "
                          f"install an XPU build ({_TORCH_INSTALL}) or use --device cpu")  # fmt: skip


def check_cache_dir(given: str | None) -> None:
    """The cache root (``--cache-dir``, else ``PROMPTEOL_CACHE``) is a folder prompteol can write
    in, or one it can create (nothing is created here)."""
    if given:
        shown = f"--cache-dir {given!r}"
        path = Path(given).expanduser()
    elif os.environ.get("PROMPTEOL_CACHE"):
        given = os.environ["PROMPTEOL_CACHE"]
        shown = f"PROMPTEOL_CACHE={given!r}"
        path = Path(given).expanduser()
    else:
        return
    what = "the cache folder (models and the embedding cache go there)"
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{shown}: that is a file, not a folder; give {what}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{shown}: cannot write in that folder; give {what} that you can write in")
        models = path / "models"
        if models.exists() and not models.is_dir():
            raise ConfigError(f"{shown}: {models} is a file where the models folder should be; give another "
                              "cache folder or move that file")  # fmt: skip
        return
    parent = path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{shown}: cannot create that folder: {parent} is a file; give {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{shown}: cannot create that folder: {parent} is not writable; give {what}")
