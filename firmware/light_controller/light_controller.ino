// The lamp board: an Arduino driving the cluster's NeoPixel lamp, commanded
// by pidaemon's lights plugin over USB serial with the line protocol of
// docs/protocol.md.  Everything but putting colours on the strip is in the
// PiClusterSerial library (firmware/libraries), tested on the host.
//
// Needs the Adafruit NeoPixel library: see firmware/README.md for building
// and flashing it with arduino-cli.  The settings below can also be given as
// compiler flags (-DPIXEL_COUNT=24 -DPIXEL_ORDER=NEO_GRB).

#include <Adafruit_NeoPixel.h>

#include <light_protocol.h>

#ifdef __AVR__
#include <avr/eeprom.h>
#include <avr/wdt.h>
#endif

// ---- settings ---------------------------------------------------------------

#ifndef PIXEL_COUNT
#define PIXEL_COUNT 32  // the 2022 lamp; 24 to 32 in the builds seen
#endif
#ifndef PIXEL_PIN
#define PIXEL_PIN 6
#endif
#ifndef PIXEL_ORDER
#define PIXEL_ORDER NEO_GRBW  // SK6812 RGBW; a plain WS2812 strip is NEO_GRB
#endif
#ifndef START_BRIGHTNESS
#define START_BRIGHTNESS 77  // of 255, until the host sets one: 32 white pixels at full draw about 2.5 A
#endif
#ifndef BOARD_ID
#define BOARD_ID "lights"  // until `ID <name>` stores one in EEPROM
#endif
const long BAUD = 115200;

// ---- hardware ---------------------------------------------------------------

// The library's own test for a white channel: in an RGB order the W and R offsets are the same.
const bool PIXEL_WHITE = ((PIXEL_ORDER >> 6) & 3) != ((PIXEL_ORDER >> 4) & 3);

Adafruit_NeoPixel strip(PIXEL_COUNT, PIXEL_PIN, PIXEL_ORDER + NEO_KHZ800);
uint8_t pixels[PIXEL_COUNT * 4];
char stored_id[picluster::Board::kMaxIdLength + 1];

class Hardware : public picluster::LightIo {
 public:
  void send_line(const char* line) {
    Serial.print(line);
    Serial.print('\n');
  }
  bool save_id(const char* id) {
#ifdef __AVR__
    eeprom_update_block(id, reinterpret_cast<void*>(0), strlen(id) + 1);
    return true;
#else
    (void)id;
    return false;  // no EEPROM code for this board yet: the compile-time id stays
#endif
  }
  void put_pixel(uint16_t index, uint8_t r, uint8_t g, uint8_t b, uint8_t w) { strip.setPixelColor(index, r, g, b, w); }
  void show() { strip.show(); }
};

#ifdef __AVR__
uint8_t reset_flags __attribute__((section(".noinit")));
void stop_watchdog_early() __attribute__((naked, used, section(".init3")));
void stop_watchdog_early() {  // see relay_controller.ino
  reset_flags = MCUSR;
  MCUSR = 0;
  wdt_disable();
}
#endif

const char* boot_reason() {
#ifdef __AVR__
  if (reset_flags & _BV(WDRF)) return "watchdog";
  if (reset_flags & _BV(BORF)) return "brownout";
  if (reset_flags & _BV(EXTRF)) return "external";
  if (reset_flags & _BV(PORF)) return "power";
#endif
  return "unknown";
}

const char* board_id() {
#ifdef __AVR__
  eeprom_read_block(stored_id, reinterpret_cast<const void*>(0), sizeof(stored_id) - 1);
#endif
  stored_id[sizeof(stored_id) - 1] = '\0';
  return picluster::Board::valid_id(stored_id) ? stored_id : BOARD_ID;
}

Hardware hardware;
picluster::LightController lamp(hardware, pixels, PIXEL_COUNT, PIXEL_WHITE, START_BRIGHTNESS, board_id(),
                                boot_reason());

void setup() {
  strip.begin();
  Serial.begin(BAUD);
#ifdef __AVR__
  wdt_enable(WDTO_2S);
#endif
  lamp.begin(millis());
}

void loop() {
#ifdef __AVR__
  wdt_reset();
#endif
  while (Serial.available() > 0) lamp.receive(static_cast<char>(Serial.read()), millis());
}
