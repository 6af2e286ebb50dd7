"""A NeoPixel (WS2812/SK6812) strip on the Pi's GPIO, through adafruit-circuitpython-neopixel.

The library and Adafruit Blinka's `board` are imported when the backend is
created, never when the plugin is loaded (the `[pi]` extra; a worker installs
neither).  On a Raspberry Pi the strip's data line goes to D18 (PWM, the
usual), D10 (SPI), D12 or D21, and the daemon needs root for the PWM/DMA
driver.  `pixel_order` names the colour bytes the strip expects; a string
with W (GRBW, RGBW: the 2022 lamp had 32 GRBW pixels) makes 4 bytes a pixel:
the library takes the pixel size from the order, `bpp` is not needed.

Colours always go to the library as 4 parts on such a strip: given 3 equal
parts, the library would move them to the white LED, and the lamp would not
show what it was asked.

Blinka's driver for the Pi 1 to 4 (bcm283x, rpi_ws281x) tells RGB from RGBW by
the buffer's length alone: one that divides by 3 is driven as RGB.  A W strip
of 3k pixels (12k bytes) would come out as 4k RGB pixels, so on those boards
such a strip gets one more pixel in the library, past the strip's end and
always dark (4(3k+1) bytes: RGBW).  Read from Blinka 10.0.0's source; not run
on a Pi here.
"""

from __future__ import annotations

from typing import Sequence

from pidaemon.schema import String, settings

from .backend import BackendError, Colour, LightsBackend, StripLayout


@settings
class NeoPixelOptions:
    pin: str = String(default="D18", pattern=r"[A-Za-z][A-Za-z0-9_]*", pattern_doc="a pin name such as D18",
                      doc="the data pin, by its name in Blinka's `board` module: D18, D10, D12, D21, "
                          "or NEOPIXEL on boards that have one")


def phantom_pixels(layout: StripLayout, bcm283x_driver: bool) -> int:
    """Pixels to add past the strip's end so that Blinka's bcm283x driver sees an RGBW buffer (0 or 1)."""
    return 1 if bcm283x_driver and layout.has_white and layout.count % 3 == 0 else 0


def uses_bcm283x_driver() -> bool:
    """True on a Raspberry Pi 1-4, whose NeoPixel writes go through Blinka's rpi_ws281x driver."""
    from adafruit_blinka.agnostic import detector

    return bool(detector.board.any_raspberry_pi and not detector.board.any_raspberry_pi_5_board)


class NeoPixelStrip(LightsBackend):
    """`strip` is the library's `neopixel.NeoPixel` (its buffers hold what was last sent)."""

    name = "neopixel"
    config_schema = NeoPixelOptions

    def __init__(self, layout: StripLayout, options: NeoPixelOptions):
        super().__init__(layout, options)
        try:
            import neopixel   # first: without the library, say so, whatever the board
            import board
        except ImportError as exc:
            raise BackendError(f"the neopixel backend needs adafruit-circuitpython-neopixel "
                               f"(pip install 'pidaemon[pi]'): {exc}") from exc
        except (NotImplementedError, RuntimeError, OSError) as exc:  # Blinka: a board it does not know
            raise BackendError(f"the neopixel backend cannot use this board: {type(exc).__name__}: {exc}") from exc
        pin = getattr(board, options.pin, None)
        if pin is None:
            pins = sorted(name for name in dir(board) if name[:1].isupper() and not name.startswith("_"))
            raise BackendError(f'the board has no pin "{options.pin}" (board pins: {", ".join(pins[:30])})')
        count = layout.count + phantom_pixels(layout, uses_bcm283x_driver())
        try:
            self.strip = neopixel.NeoPixel(pin, count, pixel_order=layout.pixel_order,
                                           brightness=1.0, auto_write=False)
        except (ValueError, RuntimeError, OSError) as exc:   # pin in use, no permission to the driver...
            raise BackendError(f"the neopixel backend cannot open pin {options.pin}: "
                               f"{type(exc).__name__}: {exc}") from exc

    def show(self, pixels: Sequence[Colour], brightness: float) -> None:
        self.strip.brightness = brightness
        self.strip[:self.layout.count] = list(pixels)
        self.strip.show()

    def close(self) -> None:
        self.strip.deinit()   # all off, pin released
