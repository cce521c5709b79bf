"""Template filters of Hearth's pages."""

from __future__ import annotations

import re
from typing import Any

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# A Markdown code span on one line: `Idempotency-Key`.
_CODE_SPAN = re.compile(r"`([^`\n]+)`")


@register.filter
def code_spans(text: object) -> SafeString:
    """Escape the text, then show its Markdown `code` spans as <code>."""
    # Escaping first leaves backticks alone and makes every other character inert,
    # so the only markup in the result is the <code> tags added here.
    return mark_safe(_CODE_SPAN.sub(r"<code>\1</code>", escape(str(text))))  # noqa: S308


@register.filter
def order_total(lines: list[dict[str, Any]]) -> str:
    """An order's total from its line snapshot ("16.00"); empty when it has no prices."""
    from shop.payments import money
    from shop.payments import order_total as total_of

    total = total_of(lines)
    return money(total) if total is not None else ""
