"""HTTP: /metrics, the JSON API, health endpoints and the landing page."""

from poolwatch.web.app import HttpServer, create_app, start_http_server

__all__ = ["HttpServer", "create_app", "start_http_server"]
