// What both boards share: the HELLO announcement, the line reader, and the
// commands every board answers (PING, HELLO, ID).  A board kind (relay,
// lights) derives from Board and answers its own commands in command().
//
// Nothing here touches hardware: bytes come in through receive(), lines go
// out through BoardIo, and time is the `now_ms` the caller passes (millis() on
// the board, a test's own clock on the host).
#ifndef PICLUSTER_BOARD_H
#define PICLUSTER_BOARD_H

#include <stdint.h>

#include "line_reader.h"
#include "reply.h"
#include "words.h"

namespace picluster {

// The protocol's version: the second word of HELLO.  The host refuses a
// board whose major version it does not know.
#define PICLUSTER_FIRMWARE_VERSION "1.0.0"

class BoardIo {
 public:
  // One line to the host, without its "\n" (the board's side adds it).
  virtual void send_line(const char* line) = 0;
  // Keep the board id (EEPROM on the board); false when it could not be kept.
  virtual bool save_id(const char* id) = 0;

 protected:
  ~BoardIo() {}
};

class Board {
 public:
  static const uint8_t kMaxIdLength = 16;

  // `id`: the board id read from EEPROM or the compile-time default; an
  // invalid one is replaced by "unset".  `boot`: why the board started
  // ("power", "watchdog"...), shown in HELLO.
  Board(BoardIo& io, const char* kind, const char* id, const char* boot, char* line_buffer, uint16_t line_capacity);

  // Feeds one byte from the host; a complete line is answered at once.
  void receive(char c, uint32_t now_ms);

  const char* id() const { return id_; }

  // 1 to 16 of A-Z a-z 0-9 '-' '_'.
  static bool valid_id(const char* id);

 protected:
  // Answers one command (words[0] is its name) into `reply`, starting it with
  // OK or ERR; returns false for a command this kind does not know.
  virtual bool command(const Words& words, Reply& reply, uint32_t now_ms) = 0;
  // Adds "key=value" words to HELLO after the id.
  virtual void describe(Reply& reply) = 0;
  // Every complete line, answered or not, malformed or not: the host is alive.
  virtual void heard_host(uint32_t now_ms) { (void)now_ms; }

  void send(const Reply& reply) { io_.send_line(reply.text()); }
  // Sends HELLO: the board kind's begin() calls it once its hardware is idle.
  void announce(uint32_t now_ms);

  BoardIo& io_;

 private:
  void hello(Reply& reply);
  void answer(char* line, uint32_t now_ms);

  const char* kind_;
  const char* boot_;
  char id_[kMaxIdLength + 1];
  LineReader reader_;
};

// Starts an error reply: "ERR <reason>".
Reply& refuse(Reply& reply, const char* reason);

}  // namespace picluster

#endif
