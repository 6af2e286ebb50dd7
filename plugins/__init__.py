"""pidaemon's built-in plugins.

Installed under the import name `pidaemon_plugins` (from this `plugins/`
folder) and registered as entry points of the `pidaemon.plugins` group in
pyproject.toml, exactly like a third-party plugin.
"""
