// The relay board: an Arduino Mega whose outputs drive the solenoids that
// press the server's reset and power buttons.  It talks to pidaemon's relay
// plugin over USB serial with the line protocol of docs/protocol.md; the
// protocol, the bounds and the silent-host release are in the
// PiClusterSerial library (firmware/libraries), tested on the host.
// This file only wires that code to pins, serial, EEPROM and the watchdog.
//
// Build: firmware/build.sh relay_controller OUTDIR (Arduino core only).

#include <avr/eeprom.h>
#include <avr/wdt.h>

#include <relay_protocol.h>

// ---- settings ---------------------------------------------------------------

const uint8_t RESET_PIN = 22;
const uint8_t POWER_PIN = 24;
#ifndef RELAY_ACTIVE_HIGH
#define RELAY_ACTIVE_HIGH 1  // the original build: HIGH energises a solenoid; 0 for an active-low relay board
#endif
const bool ACTIVE_HIGH = RELAY_ACTIVE_HIGH;
const long BAUD = 115200;
const uint32_t HOST_TIMEOUT_MS = 1500;  // a held relay is released after this long without a line
#ifndef RELAY_BOOT_LOCKOUT
#define RELAY_BOOT_LOCKOUT 1  // a board that restarts cannot press sooner than min_interval
#endif
const bool BOOT_LOCKOUT = RELAY_BOOT_LOCKOUT;
#ifndef BOARD_ID
#define BOARD_ID "relay"  // until `ID <name>` stores one in EEPROM
#endif

// name, mode, default press, max press, min interval (ms)
const picluster::RelaySpec RELAYS[] = {
    {"reset", picluster::kButton, 1000, 2000, 10000},
    // About 5 s held forces a PC off, hence a max press above that.
    {"power", picluster::kButton, 1000, 6000, 10000},
    // A relay that stays as set (ON/OFF), e.g. one cutting a supply, with its pin added to PINS:
    // {"supply", picluster::kSwitch, 0, 0, 30000},
};
const uint8_t PINS[] = {RESET_PIN, POWER_PIN};  // in the order of RELAYS
const uint8_t RELAY_COUNT = sizeof(RELAYS) / sizeof(RELAYS[0]);

// ---- boot -------------------------------------------------------------------

// The reset cause, saved before anything clears it, and the watchdog stopped
// at once: after a watchdog reset it stays armed, with its shortest timeout,
// and would reset the board again before setup() ran.
uint8_t reset_flags __attribute__((section(".noinit")));
void stop_watchdog_early() __attribute__((naked, used, section(".init3")));
void stop_watchdog_early() {
  reset_flags = MCUSR;
  MCUSR = 0;
  wdt_disable();
}

const char* boot_reason() {
  if (reset_flags & _BV(WDRF)) return "watchdog";
  if (reset_flags & _BV(BORF)) return "brownout";
  if (reset_flags & _BV(EXTRF)) return "external";
  if (reset_flags & _BV(PORF)) return "power";
  return "unknown";  // a jump to 0, e.g. from a bootloader
}

// ---- hardware ---------------------------------------------------------------

const int ID_ADDRESS = 0;  // EEPROM: a NUL-terminated id of up to 16 characters

class Hardware : public picluster::RelayIo {
 public:
  void send_line(const char* line) {
    Serial.print(line);
    Serial.print('\n');
  }
  bool save_id(const char* id) {
    eeprom_update_block(id, reinterpret_cast<void*>(ID_ADDRESS), strlen(id) + 1);
    return true;
  }
  void set_relay(uint8_t index, bool active) { digitalWrite(PINS[index], active == ACTIVE_HIGH ? HIGH : LOW); }
};

char stored_id[picluster::Board::kMaxIdLength + 1];

const char* board_id() {
  eeprom_read_block(stored_id, reinterpret_cast<const void*>(ID_ADDRESS), sizeof(stored_id) - 1);
  stored_id[sizeof(stored_id) - 1] = '\0';
  return picluster::Board::valid_id(stored_id) ? stored_id : BOARD_ID;
}

Hardware hardware;
picluster::RelayController controller(hardware, RELAYS, RELAY_COUNT, HOST_TIMEOUT_MS, BOOT_LOCKOUT, board_id(),
                                      boot_reason());

void setup() {
  for (uint8_t i = 0; i < RELAY_COUNT; ++i) {
    // The idle level first, then output: the pin never shows the active level.
    digitalWrite(PINS[i], ACTIVE_HIGH ? LOW : HIGH);
    pinMode(PINS[i], OUTPUT);
  }
  Serial.begin(BAUD);
  wdt_enable(WDTO_1S);  // loop() never takes more than a few ms; a hung board restarts with every relay idle
  controller.begin(millis());
}

void loop() {
#ifdef RELAY_TEST_HANG_AT_MS
  // Only in a test build: the loop stops here, so that a test sees the watchdog restart the board.
  if (millis() >= RELAY_TEST_HANG_AT_MS) for (;;) {}
#endif
  wdt_reset();
  while (Serial.available() > 0) controller.receive(static_cast<char>(Serial.read()), millis());
  controller.tick(millis());
}
