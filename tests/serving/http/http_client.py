"""A few lines of HTTP for the tests (the standard library's: no extra client), and server-sent events read as they
arrive."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(url: str, method: str = "GET", body: bytes | dict | None = None, headers: dict | None = None) -> Reply:
    headers = dict(headers or {})
    if isinstance(body, dict):
        body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    connection = open_request(url, method, body, headers)
    response = connection.getresponse()
    try:
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def open_request(url: str, method: str, body: bytes | None, headers: dict) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers)
    return connection


def events(response: http.client.HTTPResponse):
    """Yield (event, data) as each server-sent event arrives."""
    event, data = None, ""
    while line := response.readline():
        line = line.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line and event:
            yield event, json.loads(data)
            event, data = None, ""
