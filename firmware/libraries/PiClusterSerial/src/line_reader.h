// Collects serial bytes into lines for the board protocols.
//
// A line ends at '\n'; a '\r' before it is dropped, so that a terminal's
// "\r\n" works too.  A line longer than the buffer is not cut into pieces
// that could read as commands: everything up to its newline is discarded and
// the caller is told once, at that newline (kTooLong).  A line holding a byte
// outside printable ASCII (a NUL, a control character, a byte >= 0x80) is
// reported as kBadByte, likewise at its newline.
#ifndef PICLUSTER_LINE_READER_H
#define PICLUSTER_LINE_READER_H

#include <stdint.h>

namespace picluster {

class LineReader {
 public:
  enum Result : uint8_t { kNone, kLine, kTooLong, kBadByte };

  // `buffer` holds `capacity` bytes: at most capacity - 1 characters and the terminating NUL.
  LineReader(char* buffer, uint16_t capacity);

  // Takes one byte; says whether a line (or a rejected one) just ended.
  Result feed(char c);

  // The last complete line, NUL-terminated, without its "\r\n".  Valid after
  // feed() returned kLine, until the next call to feed().
  char* line() { return buffer_; }

  uint16_t max_length() const { return capacity_ - 1; }

 private:
  char* buffer_;
  uint16_t capacity_;
  uint16_t length_;
  bool overflow_;
  bool bad_byte_;
  bool pending_cr_;
};

}  // namespace picluster

#endif
