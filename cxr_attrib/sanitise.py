r"""One sanitiser per output medium: text from a store, a model, a plugin or a user is data.

Every writer passes such text through the function of the medium it writes to:

* terminal: :func:`terminal_text` (a rich ``Text``, never parsed as markup) or
  :func:`for_terminal` (a string for places that parse rich markup: table cells,
  titles, progress labels). Both show control characters (ESC of ANSI and OSC-8
  hyperlink sequences, BEL, C1 codes, ...) as ``\xNN``;
* markdown: :func:`for_markdown`: one line, ``&``, ``<``, ``>`` as entities, and link,
  image, emphasis, code, table and heading syntax backslash-escaped; bare URLs are
  broken so no renderer turns them into links;
* CSV: :func:`for_csv`: the OWASP rule: a cell starting with ``=``, ``+``, ``-``,
  ``@``, tab or carriage return gets a leading ``'`` so no spreadsheet runs it as a
  formula;
* HTML: Jinja2 autoescaping (:mod:`cxr_attrib.html_page`); no HTML is built by hand.

``tests/test_sanitisers.py`` feeds one hostile string through every writer.
"""

from __future__ import annotations

import html
import re

from rich.markup import escape as _rich_escape
from rich.text import Text

__all__ = ["for_csv", "for_markdown", "for_terminal", "terminal_text"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]!|~{}()]")
_LONE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_LINE_START = re.compile(r"^([#>+=-])")
_URL = re.compile(r"(?i)\b(https?|ftp|mailto|file|javascript|data)(:)|\b(www)(\.)")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _shown(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def terminal_text(value: object, style: str = "") -> Text:
    r"""``value`` as rich text shown literally: never markup, emoji codes or escape sequences.

    Control characters are shown as ``\xNN``; newlines and tabs stay.

    Args:
        value (object): any text a user, model or plugin wrote (``str()`` is used).
        style (str): a rich style for the whole text, e.g. ``"bold"``. Default: none.

    Returns:
        rich.text.Text: print it or join it with other ``Text``.

    Examples::

        >>> terminal_text("[link=x]\x1b]8;;y\x07").plain
        '[link=x]\\x1b]8;;y\\x07'
    """
    return Text(_CONTROL.sub(_shown, str(value)), style=style)


def for_terminal(value: object) -> str:
    r"""``value`` as a string for a place that parses rich markup, shown literally.

    Control characters (newlines and tabs included) become ``\xNN``; rich markup
    (``[bold]``, ``[link=...]``) is escaped.

    Examples::

        >>> for_terminal("[red]x\x1b[0m")
        '\\[red]x\\x1b[0m'
    """
    return _rich_escape(_CONTROL_ALL.sub(_shown, str(value)))


def for_markdown(value: object) -> str:
    r"""``value`` as inline markdown text (a table cell, a heading) that renders literally.

    Line breaks become spaces; ``&``, ``<`` and ``>`` become entities (no HTML, no
    autolinks); ``\ ` * [ ] ! | ~ { } ( )`` and an ``_`` that could open or close
    emphasis are backslash-escaped; a leading ``#``, ``>``, ``+``, ``=`` or ``-`` is
    escaped; ``http:``, ``www.`` and other schemes are broken so that no bare URL
    becomes a link. Other control characters are shown as ``\xNN``.

    Examples::

        >>> for_markdown("[x](http://e.vil) **b** pointing_game | <i>")
        '\\[x\\]\\(http\\://e.vil\\) \\*\\*b\\*\\* pointing_game \\| &lt;i&gt;'
    """
    text = _CONTROL.sub(_shown, " ".join(str(value).splitlines()).replace("\t", " "))
    text = html.escape(text, quote=False)
    text = _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(), text)
    text = _LONE_UNDERSCORE.sub(r"\\_", text)
    text = _URL.sub(lambda m: f"{m.group(1)}\\{m.group(2)}" if m.group(1) else f"{m.group(3)}\\{m.group(4)}", text)
    return _LINE_START.sub(r"\\\1", text)


def for_csv(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula (OWASP CSV injection rule).

    Strings starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return get a
    leading ``'``; numbers and other values pass unchanged (a negative number is a
    number, not a formula).

    Examples::

        >>> for_csv("=HYPERLINK(\\"http://e.vil\\")"), for_csv("model"), for_csv(-1.5)
        ('\\'=HYPERLINK("http://e.vil")', 'model', -1.5)
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
