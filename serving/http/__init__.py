"""The browser edge: an HTTP/JSON and server-sent-events gateway onto the gRPC API (``mediround serve --http``),
and the teaching page it serves from ``static/``.

The gateway calls the front's own gRPC server over loopback, so that authentication, limits, validation and
status codes stay in one place (``serving.front.server``, ``serving.errors``); it only converts HTTP <-> proto.
"""
