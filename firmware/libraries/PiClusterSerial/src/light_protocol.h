// The lamp board: keeps the colour of every pixel and the brightness, and
// puts them on the strip on SHOW.  A command is checked whole before anything
// changes, so a malformed or over-long line leaves the lamp as it was.
#ifndef PICLUSTER_LIGHT_PROTOCOL_H
#define PICLUSTER_LIGHT_PROTOCOL_H

#include <stdint.h>

#include "board.h"

namespace picluster {

class LightIo : public BoardIo {
 public:
  // One pixel of the next frame, brightness already applied (w is 0 on a strip without white).
  virtual void put_pixel(uint16_t index, uint8_t r, uint8_t g, uint8_t b, uint8_t w) = 0;
  // Show the frame put so far.
  virtual void show() = 0;

 protected:
  ~LightIo() {}
};

class LightController : public Board {
 public:
  static const uint16_t kLineCapacity = 161;  // 160 characters and the NUL

  // `pixels`: 4 bytes (r, g, b, w) for each of `count` (at least 1) pixels,
  // kept by the caller.  `white`: the strip has a white channel (RGBW).
  LightController(LightIo& io, uint8_t* pixels, uint16_t count, bool white, uint8_t brightness, const char* id,
                  const char* boot);

  // Every pixel off on the strip, then HELLO.
  void begin(uint32_t now_ms);

  uint8_t channel(uint16_t index, uint8_t channel) const { return pixels_[index * 4u + channel]; }
  uint8_t brightness() const { return brightness_; }
  bool pending() const { return pending_; }

 protected:
  bool command(const Words& words, Reply& reply, uint32_t now_ms);
  void describe(Reply& reply);

 private:
  uint8_t channels() const { return white_ ? 4 : 3; }
  bool colour_args(const Words& words, uint8_t first, Reply& reply, uint8_t colour[4]);
  bool number_arg(const char* word, uint32_t max, const char* what, Reply& reply, uint32_t* value);
  void store(uint16_t index, const uint8_t colour[4]);
  void show();

  void set(const Words& words, Reply& reply);
  void set_many(const Words& words, Reply& reply);
  void fill(const Words& words, Reply& reply);
  void set_brightness(const Words& words, Reply& reply);
  void get(const Words& words, Reply& reply);
  void status(Reply& reply);

  uint8_t* pixels_;
  uint16_t count_;
  bool white_;
  uint8_t brightness_;
  bool pending_;  // changes not shown yet
  char line_[kLineCapacity];
};

}  // namespace picluster

#endif
