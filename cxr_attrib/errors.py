"""Every error the toolkit raises on purpose.

Each message says what was expected, what was received and how to fix it, so a
caller (or the CLI, which prints ``str(error)`` without a traceback) can act on it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CxrAttribError",
    "UnknownNameError",
    "UnknownMethodError",
    "UnknownModelError",
    "UnknownBenchmarkError",
    "UnknownFamilyError",
    "UnknownPoolError",
    "DuplicateNameError",
    "PluginError",
    "PluginSelectionError",
    "MethodFailedError",
    "InputError",
    "LoadOptionsError",
    "MethodContractError",
    "MethodParameterError",
    "ImageLoadError",
    "ModelLoadError",
    "ModelCapabilityError",
    "DataError",
    "OutputError",
    "UnreadableFileError",
    "ArgumentTypeError",
    "FileInUseError",
    "check_choice",
]


class CxrAttribError(Exception):
    """Base class of every error raised by cxr-attrib on purpose."""


class UnknownNameError(CxrAttribError, LookupError):
    """A name that is not registered; lists the closest registered names.

    Args:
        kind (str): what was looked up, e.g. ``"method"``.
        name (str): the name that was asked for.
        choices (Iterable[str]): every registered name of that kind.
    """

    kind = "name"
    plural = ""

    def __init__(self, name: str, choices: Iterable[str]) -> None:
        self.name = name
        self.choices = sorted(choices)
        self.suggestions = difflib.get_close_matches(str(name), self.choices, n=3, cutoff=0.5)
        hint = (
            f" Did you mean {', '.join(repr(s) for s in self.suggestions)}?"
            if self.suggestions
            else ""
        )
        listed = ", ".join(self.choices) if self.choices else "(none registered)"
        plural = self.plural or f"{self.kind}s"
        super().__init__(f"unknown {self.kind} {name!r}.{hint} Registered {plural}: {listed}.")


class UnknownMethodError(UnknownNameError):
    """An attribution method name that no plugin registered."""

    kind = "method"


class UnknownModelError(UnknownNameError):
    """A model reference that is neither a registry key nor resolvable by any adapter."""

    kind = "model"

    def __init__(self, name: str, choices: Iterable[str]) -> None:
        super().__init__(name, choices)
        self.args = (
            self.args[0]
            + " A model may also be a Hugging Face id or a local checkpoint folder"
            " whose config.json names a supported model_type.",
        )


class UnknownFamilyError(UnknownNameError, ValueError):
    """A model family without a registered tiny-model recipe."""

    kind = "tiny model family"
    plural = "tiny model families"


class UnknownBenchmarkError(UnknownNameError):
    """A benchmark name that no plugin registered."""

    kind = "benchmark"


class UnknownPoolError(UnknownNameError):
    """A concept-pool name that no plugin registered."""

    kind = "pool"


class DuplicateNameError(CxrAttribError):
    """Two registrations of the same kind claimed the same name."""


class PluginError(CxrAttribError):
    """A plugin failed to import, registered badly or broke the method contract.

    Args:
        plugin (str): the plugin (entry point) name.
        distribution (str | None): the installed distribution that ships it.
        reason (str): what went wrong.
    """

    def __init__(self, plugin: str, distribution: str | None, reason: str) -> None:
        self.plugin = plugin
        self.distribution = distribution
        self.reason = reason
        where = f" (distribution {distribution})" if distribution else ""
        super().__init__(f"plugin {plugin!r}{where}: {reason}")


class PluginSelectionError(CxrAttribError):
    """``CXR_ATTRIB_LOAD_PLUGINS`` names plugins that are not installed."""


class MethodFailedError(CxrAttribError):
    """A method raised inside ``attribute``; names the method and the plugin that ships it."""


class InputError(CxrAttribError, ValueError):
    """A caller argument (seed, question, answer...) that cannot be used; names it and the valid values."""


class MethodContractError(CxrAttribError):
    """A method returned something the contract forbids (wrong shape, NaN, ...)."""


class MethodParameterError(CxrAttribError, TypeError, ValueError):
    """A hyper-parameter a method does not declare, or a value it cannot use."""


class ImageLoadError(CxrAttribError, ValueError):
    """An image that cannot be read; the message names the source and the problem."""


class ModelLoadError(CxrAttribError):
    """A model that cannot be loaded (weights missing offline, unsupported config...)."""


class LoadOptionsError(ModelLoadError, ValueError):
    """A :class:`~cxr_attrib.adapter.LoadOptions` field with an unusable value."""


class ModelCapabilityError(CxrAttribError):
    """A loaded model lacks what a method needs (gradients, attention weights)."""


class DataError(CxrAttribError, ValueError):
    """A data file or folder that is missing or malformed (names file and line)."""


class OutputError(CxrAttribError, ValueError):
    """An output path that must not be written (the input image, a folder, no-clobber)."""


class UnreadableFileError(DataError):
    """A path that is never read: not a regular file, over its size budget, a null byte in it."""


class ArgumentTypeError(CxrAttribError, TypeError):
    """An argument of the wrong type; the message names the parameter, the expected and the given type."""


class FileInUseError(CxrAttribError):
    """A file another process holds an advisory lock on (e.g. a shard store being run)."""


def check_choice(
    value: object, choices: Iterable[str], *, what: str, argument: str, error: type[CxrAttribError] = DataError
) -> str:
    """``value`` when it is one of ``choices``, else ``error`` listing them (and the closest).

    Args:
        value (object): what the caller passed.
        choices (Iterable[str]): the valid names.
        what (str): what the value names, e.g. ``"span policy"``.
        argument (str): the parameter to fix, e.g. ``"regions"``.
        error (type[CxrAttribError]): the error class raised. Default: DataError.

    Returns:
        str: ``value`` itself.

    Examples::

        >>> check_choice("auto", ("auto", "boxes"), what="region source", argument="regions")
        'auto'
    """
    choices = tuple(choices)
    if isinstance(value, str) and value in choices:
        return value
    listed = ", ".join(repr(choice) for choice in choices)
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5) if isinstance(value, str) else []
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise error(f"unknown {what} {value!r}; expected one of {listed}.{hint} Pass {argument}= one of those names.")
