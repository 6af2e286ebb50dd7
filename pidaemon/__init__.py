"""pidaemon: one daemon for every node of a Raspberry Pi cluster.

Plugin authors start with `from pidaemon import hookimpl`; the hooks are
documented in `pidaemon.hookspecs` and docs/plugins.md.  A plugin that offers
hooks of its own declares them with `hookspec`.
"""

from importlib import metadata as _metadata

from .hookspecs import hookimpl, hookspec

try:
    __version__ = _metadata.version("pidaemon")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["hookimpl", "hookspec", "__version__"]
