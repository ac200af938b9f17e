"""Pure request -> CGI: routing a path, building the CGI environment, parsing PHP's response head.

No Twisted and no sockets here; the only I/O is ``os.stat`` in the router.
"""
