"""Sample requests for the CGI environment tests: facts as the HTTP layer gives them, and routes."""

from __future__ import annotations

from fephp.cgi.environ import RequestFacts
from fephp.cgi.routing import Script

ROOT = "/srv/www"


FETCH = Script(ROOT + "/lib/exe/fetch.php", "/lib/exe/fetch.php", "/x y.png", "/lib/exe/fetch.php")


INDEX = Script(ROOT + "/index.php", "/index.php", "", "/index.php")


POST = RequestFacts(
    method=b"POST",
    raw_uri=b"/lib/exe/fetch.php/x%20y.png?media=a&w=10",
    query_string=b"media=a&w=10",
    headers=[
        (b"Host", b"wiki.example:8443"),
        (b"User-Agent", b"curl/8.5"),
        (b"Content-Type", b"application/x-www-form-urlencoded"),
        (b"Content-Length", b"7"),
        (b"Cookie", b"a=1"),
        (b"Accept", b"text/html"),
        (b"cookie", b"b=2"),
        (b"Authorization", b"Basic dTpw"),
        (b"accept", b"*/*"),
    ],
    content_length=7,
    content_type=b"application/x-www-form-urlencoded",
    server_protocol=b"HTTP/1.1",
    https=True,
    remote_addr="203.0.113.7",
    remote_port=51234,
    server_addr="192.0.2.1",
    server_port=8443,
    host=b"wiki.example:8443",
)


GET = RequestFacts(
    method=b"GET",
    raw_uri=b"/",
    query_string=b"",
    headers=[(b"Host", b"Example.ORG")],
    content_length=None,
    content_type=None,
    server_protocol=b"HTTP/1.0",
    https=False,
    remote_addr="::1",
    remote_port=40000,
    server_addr="::1",
    server_port=80,
    host=b"Example.ORG",
)
