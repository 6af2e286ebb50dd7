// Writing one reply line.
#ifndef PICLUSTER_REPLY_H
#define PICLUSTER_REPLY_H

#include <stdint.h>

namespace picluster {

// One reply line, at most 191 characters: enough for an unknown word of a
// whole 160-character line echoed back, and for STATUS and LIMITS of a full
// relay table (host tests check both).  Text past that would be cut.
class Reply {
 public:
  static const uint8_t kCapacity = 192;

  Reply() : length_(0) { text_[0] = '\0'; }

  Reply& add(const char* text);
  Reply& add(char c);
  Reply& add_uint(uint32_t value);
  Reply& word(const char* text) { return space().add(text); }    // a space, then the text
  Reply& word_uint(uint32_t value) { return space().add_uint(value); }

  const char* text() const { return text_; }
  bool empty() const { return length_ == 0; }

 private:
  Reply& space() { return length_ ? add(' ') : *this; }

  char text_[kCapacity];
  uint8_t length_;
};

}  // namespace picluster

#endif
