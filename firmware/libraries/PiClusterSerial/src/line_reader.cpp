#include "line_reader.h"

namespace picluster {

LineReader::LineReader(char* buffer, uint16_t capacity)
    : buffer_(buffer), capacity_(capacity), length_(0), overflow_(false), bad_byte_(false), pending_cr_(false) {
  buffer_[0] = '\0';
}

LineReader::Result LineReader::feed(char c) {
  if (c == '\n') {
    Result result = overflow_ ? kTooLong : bad_byte_ ? kBadByte : kLine;
    buffer_[length_] = '\0';
    length_ = 0;
    overflow_ = bad_byte_ = pending_cr_ = false;
    return result;
  }
  // A '\r' only counts as the end of a line when '\n' follows; anywhere else it is a bad byte.
  if (pending_cr_) {
    pending_cr_ = false;
    bad_byte_ = true;
  }
  if (c == '\r') {
    pending_cr_ = true;
    return kNone;
  }
  uint8_t byte = static_cast<uint8_t>(c);
  if (byte < 0x20 || byte > 0x7e) {
    bad_byte_ = true;  // kept out of the buffer: a NUL would cut the line short
    return kNone;
  }
  if (overflow_) return kNone;
  if (length_ + 1u >= capacity_) {
    overflow_ = true;
    return kNone;
  }
  buffer_[length_++] = c;
  return kNone;
}

}  // namespace picluster
