"""The renderer's one exception."""

from __future__ import annotations


class RenderError(Exception):
    """A preview could not be made; the message says what is missing and how to fix it."""
