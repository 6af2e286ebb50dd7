#include "fakes.h"

#include "check.h"

std::string SentLines::take() {
  CHECK(lines.size() <= 1);
  std::string last = lines.empty() ? "" : lines.back();
  lines.clear();
  return last;
}

std::string send(picluster::Board& board, SentLines& sent, const std::string& text, uint32_t now) {
  sent.take();
  for (char c : text) board.receive(c, now);
  return sent.take();
}
