#include "light_protocol.h"

#include <string.h>

namespace picluster {

LightController::LightController(LightIo& io, uint8_t* pixels, uint16_t count, bool white, uint8_t brightness,
                                 const char* id, const char* boot)
    : Board(io, "lights", id, boot, line_, kLineCapacity),
      pixels_(pixels),
      count_(count),
      white_(white),
      brightness_(brightness),
      pending_(false) {
  memset(pixels_, 0, count_ * 4u);
}

void LightController::begin(uint32_t now_ms) {
  show();  // whatever the strip showed before the reset goes dark
  announce(now_ms);
}

void LightController::show() {
  for (uint16_t i = 0; i < count_; ++i) {
    uint8_t scaled[4];
    for (uint8_t c = 0; c < 4; ++c) {
      scaled[c] = static_cast<uint8_t>((pixels_[i * 4u + c] * static_cast<uint16_t>(brightness_) + 127u) / 255u);
    }
    static_cast<LightIo&>(io_).put_pixel(i, scaled[0], scaled[1], scaled[2], scaled[3]);
  }
  static_cast<LightIo&>(io_).show();
  pending_ = false;
}

void LightController::store(uint16_t index, const uint8_t colour[4]) {
  memcpy(&pixels_[index * 4u], colour, 4);
  pending_ = true;
}

bool LightController::number_arg(const char* word, uint32_t max, const char* what, Reply& reply, uint32_t* value) {
  if (!parse_uint(word, 0xffffffffu, value)) {
    refuse(reply, "bad-number").word(word);
    return false;
  }
  if (*value > max) {
    refuse(reply, "out-of-range").word(what).word("0..").add_uint(max);
    return false;
  }
  return true;
}

// r g b, and w on a strip with white (0 when left out), from words[first] on.
bool LightController::colour_args(const Words& words, uint8_t first, Reply& reply, uint8_t colour[4]) {
  uint8_t given = words.count() - first;
  if (given != 3 && !(given == 4 && white_)) {
    refuse(reply, "bad-args").word(white_ ? "<r> <g> <b> [<w>]" : "<r> <g> <b>");
    return false;
  }
  static const char* const names[4] = {"r", "g", "b", "w"};
  colour[3] = 0;
  for (uint8_t c = 0; c < given; ++c) {
    uint32_t value;
    if (!number_arg(words[first + c], 255, names[c], reply, &value)) return false;
    colour[c] = static_cast<uint8_t>(value);
  }
  return true;
}

bool LightController::command(const Words& words, Reply& reply, uint32_t now_ms) {
  (void)now_ms;
  const char* name = words[0];
  if (same_word(name, "SET")) {
    set(words, reply);
  } else if (same_word(name, "SETN")) {
    set_many(words, reply);
  } else if (same_word(name, "FILL")) {
    fill(words, reply);
  } else if (same_word(name, "CLEAR") || same_word(name, "SHOW") || same_word(name, "STATUS")) {
    if (words.count() != 1) {
      refuse(reply, "bad-args").word(name);
    } else if (same_word(name, "CLEAR")) {
      memset(pixels_, 0, count_ * 4u);
      pending_ = true;
      reply.word("OK CLEAR");
    } else if (same_word(name, "SHOW")) {
      show();
      reply.word("OK SHOW");
    } else {
      status(reply);
    }
  } else if (same_word(name, "BRIGHT")) {
    set_brightness(words, reply);
  } else if (same_word(name, "GET")) {
    get(words, reply);
  } else {
    return false;
  }
  return true;
}

void LightController::set(const Words& words, Reply& reply) {
  if (words.count() < 2) {
    refuse(reply, "bad-args").word("SET <index> <r> <g> <b>").add(white_ ? " [<w>]" : "");
    return;
  }
  uint32_t index;
  uint8_t colour[4];
  if (!number_arg(words[1], count_ - 1u, "index", reply, &index)) return;
  if (!colour_args(words, 2, reply, colour)) return;
  store(static_cast<uint16_t>(index), colour);
  reply.word("OK SET").word_uint(index);
}

// SETN <start> <hex>: consecutive pixels from start, RRGGBB (RRGGBBWW with white) each.
void LightController::set_many(const Words& words, Reply& reply) {
  if (words.count() != 3) {
    refuse(reply, "bad-args").word(white_ ? "SETN <start> <RRGGBBWW...>" : "SETN <start> <RRGGBB...>");
    return;
  }
  uint32_t start;
  if (!number_arg(words[1], count_ - 1u, "start", reply, &start)) return;
  const char* hex = words[2];
  size_t digits = strlen(hex);
  size_t per_pixel = channels() * 2u;
  if (digits % per_pixel != 0) {
    refuse(reply, "bad-args").word("hex-length");
    return;
  }
  size_t n = digits / per_pixel;
  if (start + n > count_) {
    refuse(reply, "out-of-range").word("pixels").word("0..").add_uint(count_ - 1u);
    return;
  }
  for (size_t i = 0; i < digits; i += 2) {  // all checked before the first pixel changes
    uint8_t ignored;
    if (!parse_hex_byte(hex + i, &ignored)) {
      refuse(reply, "bad-number").word("hex");
      return;
    }
  }
  for (size_t p = 0; p < n; ++p) {
    uint8_t colour[4] = {0, 0, 0, 0};
    for (uint8_t c = 0; c < channels(); ++c) parse_hex_byte(hex + (p * per_pixel + c * 2u), &colour[c]);
    store(static_cast<uint16_t>(start + p), colour);
  }
  reply.word("OK SETN").word_uint(start).word_uint(n);
}

void LightController::fill(const Words& words, Reply& reply) {
  uint8_t colour[4];
  if (!colour_args(words, 1, reply, colour)) return;
  for (uint16_t i = 0; i < count_; ++i) store(i, colour);
  reply.word("OK FILL");
}

void LightController::set_brightness(const Words& words, Reply& reply) {
  uint32_t value;
  if (words.count() != 2) {
    refuse(reply, "bad-args").word("BRIGHT <0-255>");
    return;
  }
  if (!number_arg(words[1], 255, "brightness", reply, &value)) return;
  brightness_ = static_cast<uint8_t>(value);
  pending_ = true;
  reply.word("OK BRIGHT").word_uint(value);
}

void LightController::get(const Words& words, Reply& reply) {
  uint32_t index;
  if (words.count() != 2) {
    refuse(reply, "bad-args").word("GET <index>");
    return;
  }
  if (!number_arg(words[1], count_ - 1u, "index", reply, &index)) return;
  reply.word("OK GET").word_uint(index);
  for (uint8_t c = 0; c < channels(); ++c) reply.word_uint(channel(static_cast<uint16_t>(index), c));
}

void LightController::status(Reply& reply) {
  uint16_t lit = 0;
  for (uint16_t i = 0; i < count_; ++i) {
    const uint8_t* p = &pixels_[i * 4u];
    if (p[0] || p[1] || p[2] || p[3]) ++lit;
  }
  reply.word("OK STATUS pixels=").add_uint(count_).word("white=").add_uint(white_ ? 1 : 0);
  reply.word("bright=").add_uint(brightness_).word("lit=").add_uint(lit).word("pending=").add_uint(pending_ ? 1 : 0);
}

void LightController::describe(Reply& reply) {
  reply.word("pixels=").add_uint(count_).word("white=").add_uint(white_ ? 1 : 0);
}

}  // namespace picluster
