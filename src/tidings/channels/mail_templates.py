"""The default email templates (Jinja2), and how a message picks its templates.

Each mail has three parts: ``subject.txt``, ``txt`` (the plain-text body) and ``html`` (autoescaped). A single
notification looks for, first found wins: ``{app}/{type}.{part}``, ``{type}.{part}``, ``{app}/single.{part}``,
``single.{part}``; a digest (several notifications) for ``{app}/digest.{part}``, ``digest.{part}``. The operator's
loader (any ``jinja2.BaseLoader``, e.g. a ``FileSystemLoader`` over a templates directory) is searched before
these defaults, so overriding one app or one type is adding one file.

The context: ``app``, ``user``, ``recipient`` (``name``, ``address``, ``locale``), ``notification`` (the first),
``notifications`` (all of them), ``count`` (how many) and ``unsubscribe_url`` (may be empty). A notification is the
inbox JSON: ``type``, ``actors`` (latest first, each with ``id`` and maybe ``name``), ``count``, ``object``,
``data`` (the producer's: ``title``, ``body`` and ``url`` are used when present), ``created_at``.
"""

from __future__ import annotations

PARTS = ("subject.txt", "txt", "html")

_MACROS = """
{%- macro headline(n) -%}
{%- if n.data and n.data.title -%}{{ n.data.title }}
{%- else -%}
{%- set actor = (n.actors or [{}])[0] or {} -%}
{{ actor.name or actor.id or "Someone" }}{% if (n.count or 1) > 1 %} and {{ n.count - 1 }} more{% endif %}: {{ n.type }}
{%- endif -%}
{%- endmacro -%}
"""

DEFAULTS = {
    "macros.txt": _MACROS,  # the same macro twice: autoescaped in the .html copy, raw in the .txt one
    "macros.html": _MACROS,
    "single.subject.txt": '{% import "macros.txt" as m %}{{ m.headline(notification) }}',
    "single.txt": """{% import "macros.txt" as m %}{{ m.headline(notification) }}
{% if notification.data and notification.data.body %}
{{ notification.data.body }}
{% endif %}{% if notification.data and notification.data.url %}
{{ notification.data.url }}
{% endif %}{% if unsubscribe_url %}
--
Unsubscribe: {{ unsubscribe_url }}
{% endif %}""",
    "single.html": """{% import "macros.html" as m %}<!doctype html>
<html><body>
<h1>{{ m.headline(notification) }}</h1>
{% if notification.data and notification.data.body %}<p>{{ notification.data.body }}</p>{% endif %}
{% if notification.data and notification.data.url %}<p><a href="{{ notification.data.url }}">Open</a></p>{% endif %}
{% if unsubscribe_url %}<p><small><a href="{{ unsubscribe_url }}">Unsubscribe</a></small></p>{% endif %}
</body></html>""",
    "digest.subject.txt": "{{ count }} new notifications",
    "digest.txt": """{% import "macros.txt" as m %}You have {{ count }} new notifications:
{% for n in notifications %}
- {{ m.headline(n) }}{% if n.data and n.data.body %}: {{ n.data.body }}{% endif %}
{%- endfor %}
{% if unsubscribe_url %}
--
Unsubscribe: {{ unsubscribe_url }}
{% endif %}""",
    "digest.html": """{% import "macros.html" as m %}<!doctype html>
<html><body>
<h1>You have {{ count }} new notifications</h1>
<ul>
{% for n in notifications %}<li>{{ m.headline(n) }}{% if n.data and n.data.body %}: {{ n.data.body }}{% endif %}</li>
{% endfor %}</ul>
{% if unsubscribe_url %}<p><small><a href="{{ unsubscribe_url }}">Unsubscribe</a></small></p>{% endif %}
</body></html>""",
}


RESERVED = ("single", "digest", "macros")  # default template names a notification type may not shadow


def _safe(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _type_ok(kind: str) -> bool:
    return _safe(kind) and kind not in RESERVED


def candidates(app: str, kind: str, part: str) -> list[str]:
    """Template names to try for one part: ``kind`` is the notification type, "" for a digest. A type named
    like a default template (single, digest, macros) gets no names of its own."""
    names: list[str] = []
    if kind:
        if _safe(app) and _type_ok(kind):
            names.append(f"{app}/{kind}.{part}")
        if _type_ok(kind):
            names.append(f"{kind}.{part}")
        if _safe(app):
            names.append(f"{app}/single.{part}")
        names.append(f"single.{part}")
    else:
        if _safe(app):
            names.append(f"{app}/digest.{part}")
        names.append(f"digest.{part}")
    return names
