// The lamp board's protocol, on the host: commands, bounds, and a lamp that
// keeps its state through malformed and over-long lines.
#include <string>
#include <vector>

#include "check.h"
#include "fakes.h"
#include "light_protocol.h"

using picluster::LightController;

namespace {

struct Lamp {
  FakeLightIo io;
  std::vector<uint8_t> pixels;
  LightController board;
  Lamp(uint16_t count, bool white, uint8_t brightness = 255)
      : io(count), pixels(count * 4u, 0x55), board(io, pixels.data(), count, white, brightness, "lamp", "watchdog") {
    board.begin(0);
    hello = io.sent.take();
  }
  std::string say(const std::string& line) { return send(board, io.sent, line + "\n", 0); }
  std::vector<uint8_t> shown(uint16_t index) const {
    return std::vector<uint8_t>(io.strip.begin() + index * 4, io.strip.begin() + index * 4 + 4);
  }
  std::string hello;
};

typedef std::vector<uint8_t> Bytes;

void test_boot() {
  Lamp lamp(8, true, 77);
  CHECK_TEXT(lamp.hello, "HELLO lights 1.0.0 lamp pixels=8 white=1 boot=watchdog");
  CHECK(lamp.io.shows == 1);  // the strip is cleared at boot
  for (uint16_t i = 0; i < 8; ++i) CHECK(lamp.shown(i) == Bytes({0, 0, 0, 0}));
  CHECK_TEXT(lamp.say("STATUS"), "OK STATUS pixels=8 white=1 bright=77 lit=0 pending=0");
  CHECK_TEXT(lamp.say("HELLO"), "OK HELLO lights 1.0.0 lamp pixels=8 white=1 boot=watchdog");
  CHECK_TEXT(lamp.say("PING"), "OK PONG");
}

void test_set_get_show() {
  Lamp lamp(8, false);
  CHECK_TEXT(lamp.say("SET 0 255 128 1"), "OK SET 0");
  CHECK_TEXT(lamp.say("set 7 1 2 3"), "OK SET 7");
  CHECK_TEXT(lamp.say("GET 0"), "OK GET 0 255 128 1");
  CHECK_TEXT(lamp.say("GET 7"), "OK GET 7 1 2 3");
  CHECK_TEXT(lamp.say("STATUS"), "OK STATUS pixels=8 white=0 bright=255 lit=2 pending=1");
  CHECK(lamp.io.shows == 1);  // nothing reaches the strip before SHOW
  CHECK(lamp.shown(0) == Bytes({0, 0, 0, 0}));
  CHECK_TEXT(lamp.say("SHOW"), "OK SHOW");
  CHECK(lamp.io.shows == 2);
  CHECK(lamp.shown(0) == Bytes({255, 128, 1, 0}));
  CHECK(lamp.shown(7) == Bytes({1, 2, 3, 0}));
  CHECK(lamp.shown(3) == Bytes({0, 0, 0, 0}));
  CHECK_TEXT(lamp.say("STATUS"), "OK STATUS pixels=8 white=0 bright=255 lit=2 pending=0");
  CHECK_TEXT(lamp.say("SHOW now"), "ERR bad-args SHOW");
}

void test_set_bounds() {
  Lamp lamp(8, false);
  CHECK_TEXT(lamp.say("SET 8 1 2 3"), "ERR out-of-range index 0..7");
  CHECK_TEXT(lamp.say("SET 0 256 2 3"), "ERR out-of-range r 0..255");
  CHECK_TEXT(lamp.say("SET 0 1 256 3"), "ERR out-of-range g 0..255");
  CHECK_TEXT(lamp.say("SET 0 1 2 256"), "ERR out-of-range b 0..255");
  CHECK_TEXT(lamp.say("SET 0 1 2 3 4"), "ERR bad-args <r> <g> <b>");  // no white channel on this strip
  CHECK_TEXT(lamp.say("SET 0 1 2"), "ERR bad-args <r> <g> <b>");
  CHECK_TEXT(lamp.say("SET"), "ERR bad-args SET <index> <r> <g> <b>");
  CHECK_TEXT(lamp.say("SET x 1 2 3"), "ERR bad-number x");
  CHECK_TEXT(lamp.say("SET 0 1 2 0x3"), "ERR bad-number 0x3");
  CHECK_TEXT(lamp.say("SET 0 -1 2 3"), "ERR bad-number -1");
  CHECK_TEXT(lamp.say("SET 0 1 2 99999999999"), "ERR bad-number 99999999999");
  CHECK_TEXT(lamp.say("GET 8"), "ERR out-of-range index 0..7");
  CHECK_TEXT(lamp.say("GET"), "ERR bad-args GET <index>");
  CHECK_TEXT(lamp.say("STATUS"), "OK STATUS pixels=8 white=0 bright=255 lit=0 pending=0");
  CHECK_TEXT(lamp.say("SET 7 255 255 255"), "OK SET 7");
}

void test_white_channel() {
  Lamp lamp(4, true);
  CHECK_TEXT(lamp.say("SET 1 1 2 3 4"), "OK SET 1");
  CHECK_TEXT(lamp.say("SET 2 1 2 3"), "OK SET 2");  // w left out: 0
  CHECK_TEXT(lamp.say("GET 1"), "OK GET 1 1 2 3 4");
  CHECK_TEXT(lamp.say("GET 2"), "OK GET 2 1 2 3 0");
  CHECK_TEXT(lamp.say("SET 1 1 2 3 256"), "ERR out-of-range w 0..255");
  CHECK_TEXT(lamp.say("SET 1 1 2 3 4 5"), "ERR bad-args <r> <g> <b> [<w>]");
  CHECK_TEXT(lamp.say("FILL 9 8 7 6"), "OK FILL");
  CHECK_TEXT(lamp.say("SHOW"), "OK SHOW");
  CHECK(lamp.shown(3) == Bytes({9, 8, 7, 6}));
}

void test_set_many() {
  Lamp lamp(8, false);
  CHECK_TEXT(lamp.say("SETN 2 ff0000 00Ff00 0000fF"), "ERR bad-args SETN <start> <RRGGBB...>");
  CHECK_TEXT(lamp.say("SETN 2 ff000000Ff000000fF"), "OK SETN 2 3");
  CHECK_TEXT(lamp.say("GET 2"), "OK GET 2 255 0 0");
  CHECK_TEXT(lamp.say("GET 3"), "OK GET 3 0 255 0");
  CHECK_TEXT(lamp.say("GET 4"), "OK GET 4 0 0 255");
  CHECK_TEXT(lamp.say("SETN 0 0a0b0c"), "OK SETN 0 1");
  CHECK_TEXT(lamp.say("GET 0"), "OK GET 0 10 11 12");
  // Every pixel up to the last one; one past it is refused whole.
  CHECK_TEXT(lamp.say("SETN 5 010101020202030303"), "OK SETN 5 3");
  CHECK_TEXT(lamp.say("SETN 6 111111222222333333"), "ERR out-of-range pixels 0..7");
  CHECK_TEXT(lamp.say("GET 6"), "OK GET 6 2 2 2");
  CHECK_TEXT(lamp.say("SETN 8 111111"), "ERR out-of-range start 0..7");
  CHECK_TEXT(lamp.say("SETN 0 11111"), "ERR bad-args hex-length");
  CHECK_TEXT(lamp.say("SETN 0 11111122"), "ERR bad-args hex-length");
  // A bad digit in the last pixel: no pixel changes.
  CHECK_TEXT(lamp.say("SETN 0 ffffffffffffffffgf"), "ERR bad-number hex");
  CHECK_TEXT(lamp.say("GET 0"), "OK GET 0 10 11 12");
  CHECK_TEXT(lamp.say("SETN 0"), "ERR bad-args SETN <start> <RRGGBB...>");
  Lamp white(4, true);
  CHECK_TEXT(white.say("SETN 1 0102030405060708"), "OK SETN 1 2");
  CHECK_TEXT(white.say("GET 2"), "OK GET 2 5 6 7 8");
  CHECK_TEXT(white.say("SETN 1 010203"), "ERR bad-args hex-length");
}

void test_fill_clear() {
  Lamp lamp(8, false);
  CHECK_TEXT(lamp.say("FILL 1 2 3"), "OK FILL");
  CHECK_TEXT(lamp.say("STATUS"), "OK STATUS pixels=8 white=0 bright=255 lit=8 pending=1");
  CHECK_TEXT(lamp.say("FILL 1 2 256"), "ERR out-of-range b 0..255");
  CHECK_TEXT(lamp.say("FILL 1 2"), "ERR bad-args <r> <g> <b>");
  CHECK_TEXT(lamp.say("GET 5"), "OK GET 5 1 2 3");
  CHECK_TEXT(lamp.say("SHOW"), "OK SHOW");
  CHECK_TEXT(lamp.say("CLEAR"), "OK CLEAR");
  CHECK_TEXT(lamp.say("CLEAR all"), "ERR bad-args CLEAR");
  CHECK(lamp.shown(5) == Bytes({1, 2, 3, 0}));  // still shown until SHOW
  CHECK_TEXT(lamp.say("SHOW"), "OK SHOW");
  CHECK(lamp.shown(5) == Bytes({0, 0, 0, 0}));
  CHECK_TEXT(lamp.say("STATUS"), "OK STATUS pixels=8 white=0 bright=255 lit=0 pending=0");
}

void test_brightness() {
  Lamp lamp(2, true);
  CHECK_TEXT(lamp.say("SET 0 255 100 1 200"), "OK SET 0");
  CHECK_TEXT(lamp.say("BRIGHT 128"), "OK BRIGHT 128");
  CHECK_TEXT(lamp.say("SHOW"), "OK SHOW");
  // Rounded: 255*128/255 = 128, 100*128/255 = 50.2, 1*128/255 = 0.502, 200*128/255 = 100.4
  CHECK(lamp.shown(0) == Bytes({128, 50, 1, 100}));
  CHECK_TEXT(lamp.say("GET 0"), "OK GET 0 255 100 1 200");  // the colour is kept unscaled
  CHECK_TEXT(lamp.say("BRIGHT 0"), "OK BRIGHT 0");
  CHECK_TEXT(lamp.say("SHOW"), "OK SHOW");
  CHECK(lamp.shown(0) == Bytes({0, 0, 0, 0}));
  CHECK_TEXT(lamp.say("BRIGHT 255"), "OK BRIGHT 255");
  CHECK_TEXT(lamp.say("SHOW"), "OK SHOW");
  CHECK(lamp.shown(0) == Bytes({255, 100, 1, 200}));  // nothing lost by dimming to 0 and back
  CHECK_TEXT(lamp.say("BRIGHT 256"), "ERR out-of-range brightness 0..255");
  CHECK_TEXT(lamp.say("BRIGHT"), "ERR bad-args BRIGHT <0-255>");
  CHECK_TEXT(lamp.say("BRIGHT 0.5"), "ERR bad-number 0.5");
  CHECK_TEXT(lamp.say("STATUS"), "OK STATUS pixels=2 white=1 bright=255 lit=1 pending=0");
}

// The lamp's whole state (pixels, brightness, what is shown) is the same before and after `lines`.
void check_survives(Lamp& lamp, const std::vector<std::string>& lines) {
  Bytes kept = lamp.pixels;
  Bytes shown = lamp.io.strip;
  int shows = lamp.io.shows;
  uint8_t brightness = lamp.board.brightness();
  for (const std::string& line : lines) {
    std::string reply = lamp.say(line);
    CHECK(reply.compare(0, 4, "ERR ") == 0);
  }
  CHECK(lamp.pixels == kept);
  CHECK(lamp.io.strip == shown);
  CHECK(lamp.io.shows == shows);
  CHECK(lamp.board.brightness() == brightness);
}

void test_survives_malformed_lines() {
  Lamp lamp(8, false, 100);
  CHECK_TEXT(lamp.say("SETN 0 102030405060"), "OK SETN 0 2");
  CHECK_TEXT(lamp.say("SHOW"), "OK SHOW");
  CHECK_TEXT(lamp.say("SET 3 9 9 9"), "OK SET 3");  // pending, not shown
  check_survives(lamp, {"FILL", "FILL 1 2 3 4 5", "SET 1 2 3 4 5 6 7 8 9", "XYZ 1", "SHOW\x01", "CLEAR\xff",
                        "BRIGHT -1", "FILL 1\t2 3", std::string("FILL 1 2 3\0", 11), "SETN 0 zz0000",
                        "SETN 99999999999 000000", "SET 0 1 2 3\r4", "GET 0 1"});
  CHECK_TEXT(lamp.say("GET 1"), "OK GET 1 64 80 96");
  CHECK_TEXT(lamp.say("STATUS"), "OK STATUS pixels=8 white=0 bright=100 lit=3 pending=1");
}

void test_survives_over_long_lines() {
  Lamp lamp(8, false);
  CHECK_TEXT(lamp.say("FILL 5 6 7"), "OK FILL");
  CHECK_TEXT(lamp.say("SHOW"), "OK SHOW");
  std::string fill = "FILL 255 255 255";
  // 161 characters that begin with a valid command: refused whole.
  std::string too_long = fill + std::string(161 - fill.size(), ' ');
  check_survives(lamp, {too_long});
  CHECK_TEXT(lamp.say(too_long), "ERR too-long max=160");
  // A line of thousands of bytes with a command at the end: one ERR, nothing run.
  check_survives(lamp, {std::string(5000, '0') + "FILL 255 255 255", std::string(300, 'x') + "\r"});
  // 160 characters are a line; the reader is back in step after the long ones.
  std::string longest = "SETN 0 " + std::string(48 * 3, '1');  // 24 pixels' worth would not fit 8: refused
  CHECK(longest.size() <= 160);
  CHECK_TEXT(lamp.say(longest), "ERR out-of-range pixels 0..7");
  std::string exactly = "SETN 0 " + std::string(48, 'a') + std::string(160 - 7 - 48, ' ');
  CHECK(exactly.size() == 160);
  CHECK_TEXT(lamp.say(exactly), "OK SETN 0 8");
  CHECK_TEXT(lamp.say("GET 7"), "OK GET 7 170 170 170");
}

void test_longest_unknown_word_is_echoed_whole() {
  Lamp lamp(2, false);
  std::string word(160, 'Q');
  CHECK_TEXT(lamp.say(word), "ERR unknown-command " + word);
  CHECK_TEXT(lamp.say("PING"), "OK PONG");
}

void test_board_id() {
  Lamp lamp(2, false);
  CHECK_TEXT(lamp.say("ID lamp-top"), "OK ID lamp-top");
  CHECK_TEXT(lamp.io.sent.saved_id, "lamp-top");
  CHECK_TEXT(lamp.say("HELLO"), "OK HELLO lights 1.0.0 lamp-top pixels=2 white=0 boot=watchdog");
}

}  // namespace

extern const TestCase kLightTests[] = {
    {"lights: boot, HELLO", test_boot},
    {"lights: SET, GET, SHOW", test_set_get_show},
    {"lights: SET bounds and bad arguments", test_set_bounds},
    {"lights: white channel", test_white_channel},
    {"lights: SETN", test_set_many},
    {"lights: FILL and CLEAR", test_fill_clear},
    {"lights: BRIGHT", test_brightness},
    {"lights: survives malformed lines", test_survives_malformed_lines},
    {"lights: survives over-long lines", test_survives_over_long_lines},
    {"lights: the longest unknown word is echoed whole", test_longest_unknown_word_is_echoed_whole},
    {"lights: board id", test_board_id},
};
extern const int kLightTestCount = sizeof(kLightTests) / sizeof(kLightTests[0]);
