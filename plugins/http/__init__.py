"""The node's HTTP server, on the daemon's event loop (the machinery is `pidaemon.http`).

- `plugin.py`: the `http` plugin (settings, the listener, routes collected from every plugin);
- `hookspecs.py`: `pidaemon_http_routes`, through which plugins add routes.
"""
