"""pidaemon: one daemon for every node of a Raspberry Pi cluster.

Plugin authors start with `from pidaemon import hookimpl`; the hooks are
documented in `pidaemon.hookspecs` and docs/plugins.md.  A plugin that offers
hooks of its own declares them with `hookspec`.

These names are imported on first use, so that `pidaemon --help` and other
quick commands do not pay for pluggy and package metadata.
"""

__all__ = ["hookimpl", "hookspec", "__version__"]


def __getattr__(name: str):
    if name in ("hookimpl", "hookspec"):
        from . import hookspecs
        return getattr(hookspecs, name)
    if name == "__version__":
        from importlib import metadata
        try:
            version = metadata.version("pidaemon")
        except metadata.PackageNotFoundError:  # a source tree that is not installed
            version = "0+unknown"
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module 'pidaemon' has no attribute {name!r}")
