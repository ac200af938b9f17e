"""The HTTP side, on twisted.web: the site and its channel, the one resource, static files, PHP responses, error pages."""
