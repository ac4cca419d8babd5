"""HTML from Jinja2 templates with autoescaping on: every page the toolkit writes.

Templates live in ``cxr_attrib/templates/``. Autoescaping is on for every template,
so a name, answer or error written by a model, a user or a plugin is text, never
markup, unless a template marks it otherwise; values that must go in as markup are
built here (:func:`json_script`) or are numbers. Self-contained pages carry their CSS
and script inline and allow only those (by hash) and ``data:`` images in their
Content-Security-Policy (:func:`content_policy`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import lru_cache
from importlib import resources

import jinja2
from markupsafe import Markup

__all__ = ["asset", "content_policy", "json_script", "render_template"]


@lru_cache(maxsize=None)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cxr_attrib", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json_script"] = json_script
    return env


def render_template(name: str, /, **context: object) -> str:
    """The template ``name`` of ``cxr_attrib/templates/`` rendered with ``context`` (autoescaped).

    Args:
        name (str): template file name, e.g. ``"report.html.j2"``.
        **context: the template's variables; a missing one is an error, never blank.

    Returns:
        str: the rendered text.

    Examples::

        >>> "&lt;b&gt;" in render_template("attribution.html.j2", png_uri="", title="<b>", rows=[])
        True
    """
    return _environment().get_template(name).render(**context)


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The text of a static file of ``cxr_attrib/templates/`` (a page's CSS or script)."""
    return resources.files("cxr_attrib").joinpath("templates", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_policy(css: str, script: str | None = None) -> str:
    """The Content-Security-Policy of a self-contained page: nothing from the network, only
    ``data:`` images, the inline ``css`` and ``script`` (by their SHA-256)."""
    policy = f"default-src 'none'; img-src data:; style-src {_sha256(css)}"
    return policy + (f"; script-src {_sha256(script)}" if script is not None else "")


def json_script(data: object) -> Markup:
    """``data`` as JSON that cannot end its ``<script>`` element or open a comment
    (``<``, ``>`` and ``&`` as ``\\u`` escapes), ready for a ``<script type="application/json">``."""
    text = json.dumps(data, ensure_ascii=True, sort_keys=False)
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))
