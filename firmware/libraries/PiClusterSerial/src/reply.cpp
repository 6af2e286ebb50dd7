#include "reply.h"

namespace picluster {

Reply& Reply::add(char c) {
  if (length_ + 1u < kCapacity) {
    text_[length_++] = c;
    text_[length_] = '\0';
  }
  return *this;
}

Reply& Reply::add(const char* text) {
  while (*text) add(*text++);
  return *this;
}

Reply& Reply::add_uint(uint32_t value) {
  char digits[10];
  uint8_t n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value);
  while (n) add(digits[--n]);
  return *this;
}

}  // namespace picluster
