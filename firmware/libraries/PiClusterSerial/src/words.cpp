#include "words.h"

namespace picluster {

Words::Words(char* line) : count_(0), too_many_(false) {
  char* p = line;
  while (*p) {
    while (*p == ' ') *p++ = '\0';
    if (!*p) break;
    if (count_ == kMax) {
      too_many_ = true;
      break;
    }
    words_[count_++] = p;
    while (*p && *p != ' ') ++p;
  }
}

static char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

bool same_word(const char* a, const char* b) {
  while (*a && *b) {
    if (upper(*a++) != upper(*b++)) return false;
  }
  return *a == *b;
}

bool parse_uint(const char* text, uint32_t max, uint32_t* value) {
  if (!*text) return false;
  uint32_t result = 0;
  for (; *text; ++text) {
    if (*text < '0' || *text > '9') return false;
    uint32_t digit = static_cast<uint32_t>(*text - '0');
    if (digit > max || result > (max - digit) / 10) return false;  // result * 10 + digit > max, without overflowing
    result = result * 10 + digit;
  }
  *value = result;
  return true;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = upper(c);
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool parse_hex_byte(const char* text, uint8_t* value) {
  int high = hex_digit(text[0]);
  if (high < 0) return false;
  int low = hex_digit(text[1]);
  if (low < 0) return false;
  *value = static_cast<uint8_t>(high * 16 + low);
  return true;
}

}  // namespace picluster
