"""Ways of running PHP behind the web layer: the FastCGI pool and its protocol, and the php-cgi fallback.

Each provides :class:`fephp.backend.interface.Backend`; every failure is a
:class:`fephp.backend.errors.BackendError` that knows its HTTP status.
"""
