#!/usr/bin/env bash
# Compiles a board's sketch with the distribution's Arduino toolchain and
# prints its flash and RAM use.
#
#   firmware/build.sh relay_controller OUTDIR [FQBN]
#
# FQBN defaults to arduino:avr:mega:cpu=atmega2560 (the relay board).  The
# shared protocol code is the PiClusterSerial library in firmware/libraries,
# found with -libraries, so nothing is copied into the sketch.  Needs the
# Debian/Ubuntu packages arduino-builder, arduino-core-avr, gcc-avr and
# arduino-ctags.  FIRMWARE_FLAGS adds compiler flags, e.g. a sketch's settings
# (FIRMWARE_FLAGS="-DRELAY_BOOT_LOCKOUT=0").  The lamp sketch also needs the Adafruit NeoPixel library:
# pass its parent folder in ARDUINO_LIBRARIES (see firmware/README.md).
set -euo pipefail

usage() { echo "usage: $0 SKETCH OUTDIR [FQBN]   (SKETCH: relay_controller or light_controller)" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
here=$(cd "$(dirname "$0")" && pwd)
sketch=$1
out=$2
fqbn=${3:-arduino:avr:mega:cpu=atmega2560}
[ -f "$here/$sketch/$sketch.ino" ] || usage
hardware=${ARDUINO_HARDWARE:-/usr/share/arduino/hardware}
for tool in arduino-builder arduino-ctags avr-g++ avr-size; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install arduino-builder arduino-core-avr gcc-avr arduino-ctags" >&2; exit 1; }
done

mkdir -p "$out/build" "$out/cache"
libraries=(-libraries "$here/libraries")
if [ -n "${ARDUINO_LIBRARIES:-}" ]; then libraries+=(-libraries "$ARDUINO_LIBRARIES"); fi

# The prefs make Debian's split packages work together: its ctags is named
# arduino-ctags, and its avr-libc lacks DECIMAL_DIG, which the core's headers use.
arduino-builder -compile -logger=human -warnings all \
    -hardware "$hardware" -tools /usr/bin \
    "${libraries[@]}" \
    -fqbn "$fqbn" \
    -build-path "$out/build" -build-cache "$out/cache" \
    -prefs=tools.ctags.path=/usr/bin \
    -prefs='tools.ctags.pattern="/usr/bin/arduino-ctags" -u --language-force=c++ -f - --c++-kinds=svpf --fields=KSTtzns --line-directives "{source_file}"' \
    -prefs="compiler.cpp.extra_flags=-DDECIMAL_DIG=__DECIMAL_DIG__ ${FIRMWARE_FLAGS:-}" \
    "$here/$sketch/$sketch.ino"

elf="$out/build/$sketch.ino.elf"
cp "$out/build/$sketch.ino.hex" "$out/$sketch.hex"
cp "$elf" "$out/$sketch.elf"
# Program: flash (.text + .data's initial values); Data: RAM taken before the stack (.data + .bss + .noinit).
mcu=$(sed -n 's/.*cpu=\([a-z0-9]*\).*/\1/p' <<<"$fqbn")
board=$(cut -d: -f3 <<<"$fqbn")
[ -n "$mcu" ] || mcu=$(sed -n "s/^$board\.build\.mcu=//p" "$hardware/arduino/avr/boards.txt" 2>/dev/null | head -1)
if [ -n "$mcu" ]; then avr-size -C --mcu="$mcu" "$elf"; else avr-size -C "$elf"; fi
