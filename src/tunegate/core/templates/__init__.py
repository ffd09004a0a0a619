"""HTML templates (jinja2) of the pages tunegate writes: the alert email and report.html.

Every page escapes: the environment autoescapes every value (record text, phrases and reasons come from the
data, possibly from an attacker), and the templates load nothing from the network (inline CSS and SVG only).
The templates ship inside the wheel as package data next to this module.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


@cache
def environment() -> jinja2.Environment:
    """The one jinja2 environment: package templates, autoescape on, undefined names are errors."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("tunegate.core", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` (e.g. ``alert.html.j2``) with ``context``."""
    return environment().get_template(name).render(**context)
