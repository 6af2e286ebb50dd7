// Reading a command line: its words, and the numbers in them.
#ifndef PICLUSTER_WORDS_H
#define PICLUSTER_WORDS_H

#include <stdint.h>

namespace picluster {

// A line split in place into words separated by one or more spaces.
class Words {
 public:
  static const uint8_t kMax = 8;

  explicit Words(char* line);

  uint8_t count() const { return count_; }
  bool too_many() const { return too_many_; }
  const char* operator[](uint8_t i) const { return i < count_ ? words_[i] : ""; }

 private:
  const char* words_[kMax];
  uint8_t count_;
  bool too_many_;
};

// ASCII comparison ignoring case: commands and relay names may be typed in either.
bool same_word(const char* a, const char* b);

// A decimal number of digits only (no sign, no spaces) no greater than `max`.
bool parse_uint(const char* text, uint32_t max, uint32_t* value);

// Two hex digits, either case.
bool parse_hex_byte(const char* text, uint8_t* value);

}  // namespace picluster

#endif
