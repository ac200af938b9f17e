"""The HTTP side, on twisted.web: the Exchange, the site and its channel, the PHP app resource, static files, PHP responses, error pages."""

from .app import PHPResource

__all__ = ["PHPResource"]
