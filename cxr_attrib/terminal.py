"""What goes to the terminal: the shared consoles and :func:`plain`, text shown literally."""

from __future__ import annotations

import re

from rich.console import Console
from rich.text import Text

__all__ = ["console", "err_console", "plain"]

console = Console()
err_console = Console(stderr=True)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: object, style: str = "") -> Text:
    r"""``value`` as rich text that is shown literally: never markup, emoji codes or escapes.

    Control characters (ESC of ANSI / hyperlink sequences, BEL, C1 codes...) are
    shown as ``\xNN`` instead of being sent to the terminal; newlines and tabs stay.

    Args:
        value (object): any text the user, a model or a plugin wrote (``str()`` is used).
        style (str): a rich style for the whole text, e.g. ``"bold"``. Default: none.

    Returns:
        rich.text.Text: print it or join it with other ``Text``.

    Examples::

        >>> plain("[link=x]\x1b]8;;y\x07").plain
        '[link=x]\\x1b]8;;y\\x07'
    """
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value)), style=style)
