// Stand-ins for the boards' hardware on the host: they record what the
// protocol code asked for (lines sent, relay levels, pixels shown).
#ifndef PICLUSTER_TEST_FAKES_H
#define PICLUSTER_TEST_FAKES_H

#include <stdint.h>

#include <string>
#include <vector>

#include "board.h"
#include "light_protocol.h"
#include "relay_protocol.h"

struct SentLines {
  std::vector<std::string> lines;
  std::string saved_id;
  bool save_works = true;

  // The one line sent since the last call ("" if none), and a failure if there was more than one.
  std::string take();
};

class FakeRelayIo : public picluster::RelayIo {
 public:
  void send_line(const char* line) override { sent.lines.push_back(line); }
  bool save_id(const char* id) override {
    if (sent.save_works) sent.saved_id = id;
    return sent.save_works;
  }
  void set_relay(uint8_t index, bool active) override {
    if (index >= levels.size()) levels.resize(index + 1, false);
    levels[index] = active;
    ++writes;
  }

  SentLines sent;
  std::vector<bool> levels;
  int writes = 0;
};

class FakeLightIo : public picluster::LightIo {
 public:
  explicit FakeLightIo(uint16_t count) : frame(count * 4u, 0xee), strip(count * 4u, 0xee) {}
  void send_line(const char* line) override { sent.lines.push_back(line); }
  bool save_id(const char* id) override {
    if (sent.save_works) sent.saved_id = id;
    return sent.save_works;
  }
  void put_pixel(uint16_t index, uint8_t r, uint8_t g, uint8_t b, uint8_t w) override {
    uint8_t* p = &frame[index * 4u];
    p[0] = r;
    p[1] = g;
    p[2] = b;
    p[3] = w;
  }
  void show() override {
    strip = frame;
    ++shows;
  }

  SentLines sent;
  std::vector<uint8_t> frame;  // put, not shown yet
  std::vector<uint8_t> strip;  // what the strip shows
  int shows = 0;
};

// Feeds `text` byte by byte at `now`, then returns the one reply ("" if none).
std::string send(picluster::Board& board, SentLines& sent, const std::string& text, uint32_t now);

#endif
