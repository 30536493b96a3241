"""The exception hierarchy of prompteol.

Every error a user can cause derives from :class:`PrompteolError`. Messages say what
was given, what is valid, and how to fix it. The subclasses also derive from the
closest built-in exception so that ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "PrompteolError",
    "ConfigError",
    "InputError",
    "ModelNotFoundError",
    "ModelDownloadError",
    "ChecksumError",
    "DataError",
    "MissingExtraError",
]


class PrompteolError(Exception):
    """Base class of every error raised on purpose by prompteol."""


class ConfigError(PrompteolError, ValueError):
    """An option has an invalid value (template, layer, pooling, dtype, ...)."""


class InputError(PrompteolError, ValueError):
    """The texts given to an encoder are not usable (wrong type, empty prompt, ...)."""


class ModelNotFoundError(PrompteolError, LookupError):
    """A model reference is neither a packaged alias, a local folder, a GGUF file nor a reachable hub id."""


class ModelDownloadError(PrompteolError, RuntimeError):
    """Fetching a packaged model from the package index failed."""


class ChecksumError(ModelDownloadError):
    """A downloaded or joined file does not have the expected sha256."""


class DataError(PrompteolError, ValueError):
    """An evaluation data root is missing files or holds files with wrong checksums."""


class MissingExtraError(PrompteolError, ImportError):
    """An optional dependency is not installed; the message names the pip command."""

    def __init__(self, package: str, extra: str, feature: str):
        self.package = package
        self.extra = extra
        super().__init__(
            f"{feature} needs the optional package '{package}', which is not installed. "
            f"Install it with: pip install 'prompteol[{extra}]'"
        )


#: top-level module of an optional dependency -> the extra of pyproject.toml that installs it
OPTIONAL_MODULES = {
    "sklearn": "eval", "scipy": "eval", "threadpoolctl": "eval", "mteb": "mteb", "peft": "train",
    "bitsandbytes": "gpu", "fastapi": "serve", "uvicorn": "serve", "pydantic": "serve",
    "prometheus_client": "serve", "httpx": "serve", "ray": "ray", "pyarrow": "ray",
    "sentence_transformers": "baselines", "matplotlib": "plot", "llama_cpp": "bench",
}  # fmt: skip


def extra_for_module(name: str | None) -> str | None:
    """The extra that installs the (possibly dotted) module ``name``, or ``None``."""
    return OPTIONAL_MODULES.get((name or "").split(".")[0])


def require(module: str, extra: str, feature: str, package: str | None = None):
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(package or module, extra, feature) from None
