// The relay board: presses and switches relays on the host's commands, but
// decides the bounds itself.  Whatever the host sends, a button relay is
// never held longer than its max_press, never pressed again within
// min_interval of its release, and released as soon as the host has been
// silent for host_timeout_ms while it is held.
#ifndef PICLUSTER_RELAY_PROTOCOL_H
#define PICLUSTER_RELAY_PROTOCOL_H

#include <stdint.h>

#include "board.h"

namespace picluster {

enum RelayMode : uint8_t {
  kButton,  // pressed for a time (PRESS, or ON until OFF), then released by the board
  kSwitch,  // stays as set by ON/OFF, also when the host falls silent
};

struct RelaySpec {
  const char* name;           // lower case, used in commands and replies
  RelayMode mode;
  uint16_t default_press_ms;  // PRESS without a duration (buttons)
  uint16_t max_press_ms;      // the longest a button is held, however it was pressed
  uint32_t min_interval_ms;   // from a release (or a switch change) to the next press or change
};

class RelayIo : public BoardIo {
 public:
  // Drive relay `index` (its place in the table) active or idle.
  virtual void set_relay(uint8_t index, bool active) = 0;

 protected:
  ~RelayIo() {}
};

class RelayController : public Board {
 public:
  static const uint8_t kMaxRelays = 4;
  static const uint16_t kLineCapacity = 65;  // 64 characters and the NUL

  // `relays`: the table, at most kMaxRelays, kept by the caller.  With
  // `boot_lockout`, the board counts its own start as a release, so that a
  // board reset over and over (by the host opening the port, or by the
  // watchdog) cannot press faster than min_interval either.
  RelayController(RelayIo& io, const RelaySpec* relays, uint8_t count, uint32_t host_timeout_ms, bool boot_lockout,
                  const char* id, const char* boot);

  // Every relay idle, then HELLO.
  void begin(uint32_t now_ms);
  // Releases presses that are over or whose host fell silent; call often.
  void tick(uint32_t now_ms);

  bool active(uint8_t index) const { return index < count_ && state_[index].active; }
  uint32_t silent_releases() const { return silent_releases_; }

 protected:
  bool command(const Words& words, Reply& reply, uint32_t now_ms);
  void describe(Reply& reply);
  // Brings the relays up to date before the line counts as the host's sign
  // of life, so a line after a silence cannot save a press already due to end.
  void heard_host(uint32_t now_ms) {
    tick(now_ms);
    last_heard_ms_ = now_ms;
  }

 private:
  struct State {
    bool active;
    bool locked;          // within min_interval of the last release or change
    uint32_t since_ms;    // when it became active, or when it was released or changed
    uint32_t hold_ms;     // how long this press lasts (max_press for ON)
  };

  int8_t find(const char* word) const;
  uint32_t wait_ms(uint8_t index, uint32_t now_ms) const;
  void drive(uint8_t index, bool active, uint32_t now_ms);

  void press(const Words& words, Reply& reply, uint32_t now_ms);
  void switch_on(const Words& words, Reply& reply, uint32_t now_ms);
  void switch_off(const Words& words, Reply& reply, uint32_t now_ms);
  void status(const Words& words, Reply& reply, uint32_t now_ms);
  void limits(const Words& words, Reply& reply);
  bool relay_argument(const Words& words, uint8_t first_extra, uint8_t extra_allowed, const char* usage, Reply& reply,
                      int8_t* index);

  const RelaySpec* relays_;
  uint8_t count_;
  uint32_t host_timeout_ms_;
  bool boot_lockout_;
  uint32_t last_heard_ms_;
  uint32_t silent_releases_;
  State state_[kMaxRelays];
  char line_[kLineCapacity];
};

}  // namespace picluster

#endif
