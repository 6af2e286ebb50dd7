#include "board.h"

#include <string.h>

namespace picluster {

Reply& refuse(Reply& reply, const char* reason) { return reply.word("ERR").word(reason); }

Board::Board(BoardIo& io, const char* kind, const char* id, const char* boot, char* line_buffer,
             uint16_t line_capacity)
    : io_(io), kind_(kind), boot_(boot), reader_(line_buffer, line_capacity) {
  strcpy(id_, valid_id(id) ? id : "unset");
}

bool Board::valid_id(const char* id) {
  size_t length = strlen(id);
  if (length == 0 || length > kMaxIdLength) return false;
  for (; *id; ++id) {
    char c = *id;
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

void Board::hello(Reply& reply) {
  reply.word("HELLO").word(kind_).word(PICLUSTER_FIRMWARE_VERSION).word(id_);
  describe(reply);
  reply.word("boot=").add(boot_);
}

void Board::announce(uint32_t now_ms) {
  heard_host(now_ms);
  Reply reply;
  hello(reply);
  send(reply);
}

void Board::receive(char c, uint32_t now_ms) {
  LineReader::Result result = reader_.feed(c);
  if (result == LineReader::kNone) return;
  heard_host(now_ms);
  if (result == LineReader::kLine) {
    answer(reader_.line(), now_ms);
    return;
  }
  Reply reply;
  if (result == LineReader::kTooLong) refuse(reply, "too-long").word("max=").add_uint(reader_.max_length());
  else refuse(reply, "bad-byte");
  send(reply);
}

void Board::answer(char* line, uint32_t now_ms) {
  Words words(line);
  if (words.count() == 0) return;  // an empty line only keeps the host's connection alive
  Reply reply;
  if (words.too_many()) {
    refuse(reply, "bad-args").word("too-many-words");
  } else if (same_word(words[0], "PING")) {
    if (words.count() != 1) refuse(reply, "bad-args").word("PING");
    else reply.word("OK PONG");
  } else if (same_word(words[0], "HELLO")) {
    if (words.count() != 1) {
      refuse(reply, "bad-args").word("HELLO");
    } else {
      reply.word("OK");
      hello(reply);
    }
  } else if (same_word(words[0], "ID")) {
    if (words.count() != 2 || !valid_id(words[1])) {
      refuse(reply, "bad-args").word("ID <1-16 of A-Z a-z 0-9 - _>");
    } else if (!io_.save_id(words[1])) {
      refuse(reply, "not-saved");
    } else {
      strcpy(id_, words[1]);
      reply.word("OK ID").word(id_);
    }
  } else if (!command(words, reply, now_ms)) {
    refuse(reply, "unknown-command").word(words[0]);
  }
  send(reply);
}

}  // namespace picluster
