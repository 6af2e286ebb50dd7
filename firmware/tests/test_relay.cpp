// The relay board's protocol, on the host, with a clock the tests move by hand.
#include <string>

#include "check.h"
#include "fakes.h"
#include "relay_protocol.h"

using picluster::RelayController;
using picluster::RelaySpec;

namespace {

const RelaySpec kRelays[] = {
    {"reset", picluster::kButton, 1000, 2000, 10000},
    {"power", picluster::kButton, 1000, 6000, 10000},
    {"supply", picluster::kSwitch, 0, 0, 30000},
};
const uint32_t kTimeout = 1500;
const int RESET = 0, POWER = 1, SUPPLY = 2;

// A board started at `start` ms, its HELLO read.
struct Rig {
  FakeRelayIo io;
  RelayController board;
  explicit Rig(uint32_t start = 0, bool boot_lockout = false, const char* id = "relay-test")
      : board(io, kRelays, 3, kTimeout, boot_lockout, id, "power") {
    board.begin(start);
    hello = io.sent.take();
  }
  std::string say(const std::string& line, uint32_t now) { return send(board, io.sent, line + "\n", now); }
  // Moves the clock from `from` to `to` in 1 ms steps, ticking, as loop() would.
  void run(uint32_t from, uint32_t to) {
    for (uint32_t t = from; t != to + 1; ++t) board.tick(t);
  }
  std::string hello;
};

void test_boot() {
  Rig rig;
  CHECK_TEXT(rig.hello, "HELLO relay 1.0.0 relay-test relays=reset,power,supply boot=power");
  CHECK(rig.io.levels.size() == 3);
  CHECK(rig.io.writes == 3);  // every relay driven idle at boot, before anything else
  for (int i = 0; i < 3; ++i) CHECK(!rig.board.active(i));
  CHECK_TEXT(rig.say("HELLO", 5), "OK HELLO relay 1.0.0 relay-test relays=reset,power,supply boot=power");
  CHECK_TEXT(rig.say("HELLO again", 5), "ERR bad-args HELLO");
  CHECK_TEXT(rig.say("PING", 5), "OK PONG");
  CHECK_TEXT(rig.say("ping", 5), "OK PONG");
  CHECK_TEXT(rig.say("PING 1", 5), "ERR bad-args PING");
}

void test_press_default_and_release() {
  Rig rig;
  CHECK_TEXT(rig.say("PRESS reset", 100), "OK PRESS reset 1000");
  CHECK(rig.io.levels[RESET]);
  CHECK(!rig.io.levels[POWER]);
  rig.run(100, 1099);
  CHECK(rig.io.levels[RESET]);
  rig.board.tick(1100);
  CHECK(!rig.io.levels[RESET]);
  CHECK(rig.board.silent_releases() == 0);  // a press that ran its course is not a silent host
}

void test_press_by_number_and_case() {
  Rig rig;
  CHECK_TEXT(rig.say("press 1 300", 0), "OK PRESS power 300");
  CHECK(rig.io.levels[POWER]);
  rig.run(0, 300);
  CHECK(!rig.io.levels[POWER]);
  CHECK_TEXT(rig.say("Press RESET 5", 400), "OK PRESS reset 5");
  CHECK(rig.io.levels[RESET]);
}

void test_press_bounds() {
  Rig rig;
  CHECK_TEXT(rig.say("PRESS reset 0", 0), "ERR out-of-range reset 1..2000");
  CHECK_TEXT(rig.say("PRESS reset 2001", 0), "ERR out-of-range reset 1..2000");
  CHECK_TEXT(rig.say("PRESS power 6001", 0), "ERR out-of-range power 1..6000");
  CHECK_TEXT(rig.say("PRESS power 4294967295", 0), "ERR out-of-range power 1..6000");
  CHECK_TEXT(rig.say("PRESS power 4294967296", 0), "ERR bad-number 4294967296");
  CHECK_TEXT(rig.say("PRESS power 99999999999999", 0), "ERR bad-number 99999999999999");
  CHECK_TEXT(rig.say("PRESS power -5", 0), "ERR bad-number -5");
  CHECK_TEXT(rig.say("PRESS power +5", 0), "ERR bad-number +5");
  CHECK_TEXT(rig.say("PRESS power 5ms", 0), "ERR bad-number 5ms");
  CHECK_TEXT(rig.say("PRESS power 1.5", 0), "ERR bad-number 1.5");
  CHECK_TEXT(rig.say("PRESS", 0), "ERR bad-args PRESS <relay> [ms]");
  CHECK_TEXT(rig.say("PRESS reset 10 20", 0), "ERR bad-args PRESS <relay> [ms]");
  CHECK_TEXT(rig.say("PRESS lamp 10", 0), "ERR unknown-relay lamp");
  CHECK_TEXT(rig.say("PRESS 3 10", 0), "ERR unknown-relay 3");
  CHECK_TEXT(rig.say("PRESS -1 10", 0), "ERR unknown-relay -1");
  CHECK_TEXT(rig.say("PRESS supply 10", 0), "ERR wrong-mode supply switch");
  CHECK_TEXT(rig.say("PRESS 2", 0), "ERR wrong-mode supply switch");
  for (int i = 0; i < 3; ++i) CHECK(!rig.io.levels[i]);  // nothing refused moved a relay
  CHECK_TEXT(rig.say("PRESS power 6000", 0), "OK PRESS power 6000");
  CHECK_TEXT(rig.say("PRESS reset 2000", 0), "OK PRESS reset 2000");
}

void test_busy_and_min_interval() {
  Rig rig;
  CHECK_TEXT(rig.say("PRESS reset 500", 0), "OK PRESS reset 500");
  CHECK_TEXT(rig.say("PRESS reset 500", 100), "ERR busy reset");
  CHECK_TEXT(rig.say("ON reset", 100), "ERR busy reset");
  rig.run(100, 500);
  CHECK(!rig.io.levels[RESET]);
  // The interval runs from the release (500), not from the press.
  CHECK_TEXT(rig.say("PRESS reset", 501), "ERR too-soon reset 9999");
  CHECK_TEXT(rig.say("PRESS power 10", 600), "OK PRESS power 10");  // each relay has its own interval
  CHECK_TEXT(rig.say("ON reset", 10499), "ERR too-soon reset 1");
  CHECK(!rig.io.levels[RESET]);
  CHECK_TEXT(rig.say("PRESS reset 10", 10500), "OK PRESS reset 10");
  CHECK(rig.io.levels[RESET]);
}

void test_hold_with_on_off() {
  Rig rig;
  CHECK_TEXT(rig.say("ON power", 0), "OK ON power 6000");
  CHECK(rig.io.levels[POWER]);
  CHECK_TEXT(rig.say("OFF power", 700), "OK OFF power");
  CHECK(!rig.io.levels[POWER]);
  CHECK_TEXT(rig.say("ON power", 800), "ERR too-soon power 9900");
  CHECK_TEXT(rig.say("OFF power", 800), "OK OFF power");  // releasing an idle relay: nothing to do
  CHECK_TEXT(rig.say("ON", 800), "ERR bad-args ON <relay>");
  CHECK_TEXT(rig.say("OFF reset now", 800), "ERR bad-args OFF <relay>");
  CHECK_TEXT(rig.say("OFF nothing", 800), "ERR unknown-relay nothing");
}

void test_hold_never_exceeds_max_press() {
  Rig rig;
  CHECK_TEXT(rig.say("ON reset", 0), "OK ON reset 2000");
  // The host keeps talking, but never says OFF: the board lets go at max_press.
  for (uint32_t t = 0; t < 2000; t += 500) {
    CHECK_TEXT(rig.say("PING", t), "OK PONG");
    rig.run(t, t + 499);
  }
  CHECK(rig.io.levels[RESET]);
  rig.board.tick(2000);
  CHECK(!rig.io.levels[RESET]);
  CHECK(rig.board.silent_releases() == 0);
}

void test_silent_host_releases_press() {
  Rig rig;
  CHECK_TEXT(rig.say("PRESS power 5000", 1000), "OK PRESS power 5000");
  rig.run(1000, 2399);
  CHECK_TEXT(rig.say("PING", 2400), "OK PONG");
  rig.run(2400, 3799);
  CHECK_TEXT(rig.say("", 3800), "");  // an empty line is a sign of life too
  rig.run(3800, 5299);
  CHECK(rig.io.levels[POWER]);
  rig.board.tick(5300);  // 1500 ms after the last line, 700 ms before the press would end
  CHECK(!rig.io.levels[POWER]);
  CHECK(rig.board.silent_releases() == 1);
  CHECK_TEXT(rig.say("STATUS", 5301), "OK STATUS silent=1 reset=idle,0 power=idle,9999 supply=idle,0");
  CHECK_TEXT(rig.say("PRESS power", 5400), "ERR too-soon power 9900");  // a silent release starts the interval
}

void test_silent_host_releases_hold_and_counts_any_line() {
  Rig rig;
  CHECK_TEXT(rig.say("ON power", 0), "OK ON power 6000");
  // Malformed, unknown, over-long: all show the host is alive.
  rig.run(0, 1399);
  CHECK_TEXT(rig.say("BOGUS", 1400), "ERR unknown-command BOGUS");
  rig.run(1400, 2799);
  CHECK_TEXT(rig.say(std::string(80, 'x'), 2800), "ERR too-long max=64");
  rig.run(2800, 4299);
  CHECK(rig.io.levels[POWER]);
  rig.board.tick(4300);
  CHECK(!rig.io.levels[POWER]);
  CHECK(rig.board.silent_releases() == 1);
}

void test_line_after_silence_does_not_save_press() {
  Rig rig;
  CHECK_TEXT(rig.say("PRESS power 5000", 0), "OK PRESS power 5000");
  // No tick ran in between (a busy loop): the press is still due to end at 1500.
  CHECK_TEXT(rig.say("STATUS", 1600), "OK STATUS silent=1 reset=idle,0 power=idle,10000 supply=idle,0");
  CHECK(!rig.io.levels[POWER]);
}

void test_silence_leaves_switch_as_set() {
  Rig rig;
  CHECK_TEXT(rig.say("ON supply", 0), "OK ON supply");
  CHECK(rig.io.levels[SUPPLY]);
  rig.run(0, 20000);
  CHECK(rig.io.levels[SUPPLY]);
  CHECK(rig.board.silent_releases() == 0);
}

void test_switch() {
  Rig rig;
  CHECK_TEXT(rig.say("OFF supply", 0), "OK OFF supply");  // already off: no change, no interval
  CHECK_TEXT(rig.say("ON 2", 10), "OK ON supply");
  CHECK(rig.io.levels[SUPPLY]);
  CHECK_TEXT(rig.say("ON supply", 20), "OK ON supply");  // already on
  CHECK_TEXT(rig.say("OFF supply", 1010), "ERR too-soon supply 29000");
  CHECK(rig.io.levels[SUPPLY]);
  CHECK_TEXT(rig.say("STATUS", 1010), "OK STATUS silent=0 reset=idle,0 power=idle,0 supply=on,29000");
  rig.run(1010, 30010);
  CHECK_TEXT(rig.say("OFF supply", 30010), "OK OFF supply");
  CHECK(!rig.io.levels[SUPPLY]);
  CHECK_TEXT(rig.say("ON supply", 30011), "ERR too-soon supply 29999");
  CHECK(!rig.io.levels[SUPPLY]);
}

void test_status_and_limits() {
  Rig rig;
  CHECK_TEXT(rig.say("STATUS", 0), "OK STATUS silent=0 reset=idle,0 power=idle,0 supply=idle,0");
  CHECK_TEXT(rig.say("PRESS reset 1200", 100), "OK PRESS reset 1200");
  CHECK_TEXT(rig.say("STATUS", 400), "OK STATUS silent=0 reset=on,900 power=idle,0 supply=idle,0");
  CHECK_TEXT(rig.say("STATUS now", 400), "ERR bad-args STATUS");
  CHECK_TEXT(rig.say("LIMITS", 400),
             "OK LIMITS timeout=1500 reset=button,1000,2000,10000 power=button,1000,6000,10000 "
             "supply=switch,0,0,30000");
  CHECK_TEXT(rig.say("LIMITS all", 400), "ERR bad-args LIMITS");
}

void test_boot_lockout() {
  Rig locked(1000, true);
  CHECK_TEXT(locked.say("PRESS reset", 1000), "ERR too-soon reset 10000");
  CHECK_TEXT(locked.say("ON supply", 2000), "ERR too-soon supply 29000");
  CHECK_TEXT(locked.say("PRESS reset", 11000), "OK PRESS reset 1000");
  Rig free(1000, false);
  CHECK_TEXT(free.say("PRESS reset", 1000), "OK PRESS reset 1000");
}

void test_clock_wraps() {
  // millis() wraps after 49.7 days; a press across the wrap still lasts its time.
  uint32_t start = 0xffffffffu - 299;
  Rig rig(start - 5000);
  CHECK_TEXT(rig.say("PRESS reset 1000", start), "OK PRESS reset 1000");
  rig.run(start, start + 899u);
  CHECK_TEXT(rig.say("PING", start + 900u), "OK PONG");
  rig.run(start + 900u, start + 999u);
  CHECK(rig.io.levels[RESET]);
  rig.board.tick(start + 1000u);
  CHECK(!rig.io.levels[RESET]);
  CHECK_TEXT(rig.say("PRESS reset", start + 10999u), "ERR too-soon reset 1");
  CHECK_TEXT(rig.say("PRESS reset 10", start + 11000u), "OK PRESS reset 10");
}

void test_lock_does_not_return_after_wrap() {
  Rig rig;
  CHECK_TEXT(rig.say("PRESS reset 10", 0), "OK PRESS reset 10");
  rig.run(0, 20000);
  // 2^32 ms later the difference to the release looks small again; the lock was cleared long ago.
  CHECK_TEXT(rig.say("PRESS reset 10", 12u), "OK PRESS reset 10");
}

void test_malformed_lines() {
  Rig rig;
  CHECK_TEXT(rig.say("", 0), "");
  CHECK_TEXT(rig.say("     ", 0), "");
  CHECK_TEXT(rig.say("FROB 1", 0), "ERR unknown-command FROB");
  CHECK_TEXT(rig.say("PRESS\treset", 0), "ERR bad-byte");
  CHECK_TEXT(rig.say(std::string("PRESS reset") + '\0', 0), "ERR bad-byte");
  CHECK_TEXT(rig.say("PRESS r\xe9set", 0), "ERR bad-byte");
  CHECK_TEXT(rig.say("PRE\rSS reset", 0), "ERR bad-byte");
  CHECK_TEXT(rig.say("a b c d e f g h i", 0), "ERR bad-args too-many-words");
  CHECK_TEXT(rig.say("PING\r", 0), "OK PONG");  // "\r\n" is a line end too
  CHECK_TEXT(rig.say("  PING  ", 0), "OK PONG");
  for (int i = 0; i < 3; ++i) CHECK(!rig.io.levels[i]);
}

void test_over_long_lines() {
  Rig rig;
  std::string longest = "PRESS reset 10" + std::string(50, ' ');  // 64 characters: accepted
  CHECK(longest.size() == 64);
  CHECK_TEXT(rig.say(longest, 0), "OK PRESS reset 10");
  rig.run(0, 10);
  // 65 characters: refused whole, although it starts with a valid command.
  CHECK_TEXT(rig.say("PRESS power 10" + std::string(51, ' '), 20), "ERR too-long max=64");
  CHECK(!rig.io.levels[POWER]);
  // A very long line is answered once, at its end, and what follows is read afresh.
  CHECK_TEXT(rig.say(std::string(1000, 'P') + "PRESS power 10", 30), "ERR too-long max=64");
  CHECK(!rig.io.levels[POWER]);
  CHECK_TEXT(rig.say("PRESS power 10", 40), "OK PRESS power 10");
}

void test_partial_line_is_not_a_command() {
  Rig rig;
  for (char c : std::string("PRESS reset 10")) rig.board.receive(c, 0);
  CHECK(rig.io.sent.lines.empty());
  CHECK(!rig.io.levels[RESET]);
  rig.board.receive('\n', 0);
  CHECK_TEXT(rig.io.sent.take(), "OK PRESS reset 10");
}

void test_board_id() {
  Rig rig;
  CHECK_TEXT(rig.say("ID mega-2_B", 0), "OK ID mega-2_B");
  CHECK_TEXT(rig.io.sent.saved_id, "mega-2_B");
  CHECK_TEXT(rig.say("HELLO", 0), "OK HELLO relay 1.0.0 mega-2_B relays=reset,power,supply boot=power");
  CHECK_TEXT(rig.say("ID bad!", 0), "ERR bad-args ID <1-16 of A-Z a-z 0-9 - _>");
  CHECK_TEXT(rig.say("ID 12345678901234567", 0), "ERR bad-args ID <1-16 of A-Z a-z 0-9 - _>");
  CHECK_TEXT(rig.say("ID", 0), "ERR bad-args ID <1-16 of A-Z a-z 0-9 - _>");
  CHECK_TEXT(rig.say("ID 1234567890123456", 0), "OK ID 1234567890123456");
  rig.io.sent.save_works = false;
  CHECK_TEXT(rig.say("ID other", 0), "ERR not-saved");
  CHECK_TEXT(rig.board.id(), "1234567890123456");
  Rig blank(0, false, "");  // nothing in EEPROM and no default
  CHECK_TEXT(blank.hello, "HELLO relay 1.0.0 unset relays=reset,power,supply boot=power");
  Rig junk(0, false, "\xff\xff\xff");  // an erased EEPROM
  CHECK_TEXT(junk.board.id(), "unset");
}

void test_a_full_table_fits_in_a_reply() {
  const RelaySpec four[] = {
      {"reset", picluster::kButton, 1000, 2000, 10000},
      {"power", picluster::kButton, 1000, 6000, 10000},
      {"supply", picluster::kSwitch, 0, 0, 30000},
      {"fans", picluster::kButton, 65535, 65535, 4294967295u},
      {"fifth", picluster::kButton, 1, 1, 1},  // past kMaxRelays: not used
  };
  FakeRelayIo io;
  RelayController board(io, four, 5, kTimeout, false, "relay", "power");
  board.begin(0);
  CHECK_TEXT(io.sent.take(), "HELLO relay 1.0.0 relay relays=reset,power,supply,fans boot=power");
  CHECK_TEXT(send(board, io.sent, "LIMITS\n", 0),
             "OK LIMITS timeout=1500 reset=button,1000,2000,10000 power=button,1000,6000,10000 "
             "supply=switch,0,0,30000 fans=button,65535,65535,4294967295");
  CHECK_TEXT(send(board, io.sent, "PRESS fans 65535\n", 0), "OK PRESS fans 65535");
  CHECK_TEXT(send(board, io.sent, "STATUS\n", 0),
             "OK STATUS silent=0 reset=idle,0 power=idle,0 supply=idle,0 fans=on,65535");
  CHECK_TEXT(send(board, io.sent, "PRESS fifth\n", 0), "ERR unknown-relay fifth");
  CHECK_TEXT(send(board, io.sent, "PRESS 4\n", 0), "ERR unknown-relay 4");
  CHECK(io.levels.size() == 4);
}

}  // namespace

extern const TestCase kRelayTests[] = {
    {"relay: boot, HELLO, PING", test_boot},
    {"relay: default press and release", test_press_default_and_release},
    {"relay: relay by number, any case", test_press_by_number_and_case},
    {"relay: press bounds and bad arguments", test_press_bounds},
    {"relay: busy and min interval", test_busy_and_min_interval},
    {"relay: hold with ON and OFF", test_hold_with_on_off},
    {"relay: hold never exceeds max press", test_hold_never_exceeds_max_press},
    {"relay: silent host releases a press", test_silent_host_releases_press},
    {"relay: silent host releases a hold; any line counts", test_silent_host_releases_hold_and_counts_any_line},
    {"relay: a line after a silence does not save the press", test_line_after_silence_does_not_save_press},
    {"relay: silence leaves a switch as set", test_silence_leaves_switch_as_set},
    {"relay: switch relay", test_switch},
    {"relay: STATUS and LIMITS", test_status_and_limits},
    {"relay: boot lockout", test_boot_lockout},
    {"relay: clock wraps", test_clock_wraps},
    {"relay: lock does not return after a wrap", test_lock_does_not_return_after_wrap},
    {"relay: malformed lines", test_malformed_lines},
    {"relay: over-long lines", test_over_long_lines},
    {"relay: partial line", test_partial_line_is_not_a_command},
    {"relay: board id", test_board_id},
    {"relay: a full table fits in a reply", test_a_full_table_fits_in_a_reply},
};
extern const int kRelayTestCount = sizeof(kRelayTests) / sizeof(kRelayTests[0]);
