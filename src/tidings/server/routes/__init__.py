"""The server's routers, one module per resource."""

from __future__ import annotations

from starlette.convertors import PathConvertor, register_url_convertor


class StreamConvertor(PathConvertor):
    """``{stream:stream}``: a stream name in a path, slashes and line breaks included.

    Starlette's ``path`` is ``.*``, which stops at a line break: a name holding one
    matched no route (404) instead of reaching the store (400 for an append, nothing
    to read for a read).
    """

    regex = "(?s:.*)"


register_url_convertor("stream", StreamConvertor())
