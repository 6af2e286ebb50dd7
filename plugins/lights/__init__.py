"""The NeoPixel lamp plugin (`plugin.py`) and the backends that drive its strip.

A plugin author adds a strip by subclassing `LightsBackend` (backend.py) and
registering the class in the `pidaemon.lights_backends` entry-point group.
"""

from .backend import BackendError, Colour, LightsBackend, StripLayout

__all__ = ["BackendError", "Colour", "LightsBackend", "StripLayout"]
