"""pidaemon: one daemon for every node of a Raspberry Pi cluster.

Plugin authors start with `from pidaemon import hookimpl`; the hooks are
documented in `pidaemon.hookspecs`.
"""

from importlib import metadata as _metadata

from .hookspecs import hookimpl

try:
    __version__ = _metadata.version("pidaemon")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["hookimpl", "__version__"]
