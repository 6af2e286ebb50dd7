#include "relay_protocol.h"

namespace picluster {

RelayController::RelayController(RelayIo& io, const RelaySpec* relays, uint8_t count, uint32_t host_timeout_ms,
                                 bool boot_lockout, const char* id, const char* boot)
    : Board(io, "relay", id, boot, line_, kLineCapacity),
      relays_(relays),
      count_(count > kMaxRelays ? kMaxRelays : count),
      host_timeout_ms_(host_timeout_ms),
      boot_lockout_(boot_lockout),
      last_heard_ms_(0),
      silent_releases_(0) {
  for (uint8_t i = 0; i < kMaxRelays; ++i) state_[i] = State{false, false, 0, 0};
}

void RelayController::begin(uint32_t now_ms) {
  for (uint8_t i = 0; i < count_; ++i) {
    static_cast<RelayIo&>(io_).set_relay(i, false);
    state_[i] = State{false, boot_lockout_, now_ms, 0};
  }
  announce(now_ms);
}

void RelayController::drive(uint8_t index, bool active, uint32_t now_ms) {
  static_cast<RelayIo&>(io_).set_relay(index, active);
  State& state = state_[index];
  state.active = active;
  state.since_ms = now_ms;
  // A button is locked from its release; a switch from any change.
  state.locked = !active || relays_[index].mode == kSwitch;
}

void RelayController::tick(uint32_t now_ms) {
  for (uint8_t i = 0; i < count_; ++i) {
    State& state = state_[i];
    uint32_t elapsed = now_ms - state.since_ms;  // unsigned: right across millis() wrapping
    if (state.active && relays_[i].mode == kButton) {
      if (elapsed >= state.hold_ms) {
        drive(i, false, now_ms);
      } else if (now_ms - last_heard_ms_ >= host_timeout_ms_) {
        drive(i, false, now_ms);
        ++silent_releases_;
      }
    } else if (state.locked && elapsed >= relays_[i].min_interval_ms) {
      state.locked = false;  // cleared here so that a lock cannot come back when millis() wraps
    }
  }
}

uint32_t RelayController::wait_ms(uint8_t index, uint32_t now_ms) const {
  const State& state = state_[index];
  if (!state.locked) return 0;
  uint32_t elapsed = now_ms - state.since_ms;
  uint32_t interval = relays_[index].min_interval_ms;
  return elapsed >= interval ? 1 : interval - elapsed;  // still locked until the next tick
}

int8_t RelayController::find(const char* word) const {
  if (count_ == 0) return -1;
  uint32_t number;
  if (parse_uint(word, count_ - 1u, &number)) return static_cast<int8_t>(number);
  for (uint8_t i = 0; i < count_; ++i) {
    if (same_word(word, relays_[i].name)) return static_cast<int8_t>(i);
  }
  return -1;
}

bool RelayController::relay_argument(const Words& words, uint8_t first_extra, uint8_t extra_allowed, const char* usage,
                                     Reply& reply, int8_t* index) {
  if (words.count() < first_extra || words.count() > first_extra + extra_allowed) {
    refuse(reply, "bad-args").word(usage);
    return false;
  }
  *index = find(words[1]);
  if (*index < 0) {
    refuse(reply, "unknown-relay").word(words[1]);
    return false;
  }
  return true;
}

bool RelayController::command(const Words& words, Reply& reply, uint32_t now_ms) {
  const char* name = words[0];
  if (same_word(name, "PRESS")) press(words, reply, now_ms);
  else if (same_word(name, "ON")) switch_on(words, reply, now_ms);
  else if (same_word(name, "OFF")) switch_off(words, reply, now_ms);
  else if (same_word(name, "STATUS")) status(words, reply, now_ms);
  else if (same_word(name, "LIMITS")) limits(words, reply);
  else return false;
  return true;
}

void RelayController::press(const Words& words, Reply& reply, uint32_t now_ms) {
  int8_t i;
  if (!relay_argument(words, 2, 1, "PRESS <relay> [ms]", reply, &i)) return;
  const RelaySpec& relay = relays_[i];
  if (relay.mode != kButton) {
    refuse(reply, "wrong-mode").word(relay.name).word("switch");
    return;
  }
  uint32_t ms = relay.default_press_ms;
  if (words.count() == 3) {
    if (!parse_uint(words[2], 0xffffffffu, &ms)) {
      refuse(reply, "bad-number").word(words[2]);
      return;
    }
    if (ms < 1 || ms > relay.max_press_ms) {
      refuse(reply, "out-of-range").word(relay.name).word("1..").add_uint(relay.max_press_ms);
      return;
    }
  }
  if (state_[i].active) {
    refuse(reply, "busy").word(relay.name);
    return;
  }
  if (state_[i].locked) {
    refuse(reply, "too-soon").word(relay.name).word_uint(wait_ms(i, now_ms));
    return;
  }
  drive(i, true, now_ms);
  state_[i].hold_ms = ms;
  reply.word("OK PRESS").word(relay.name).word_uint(ms);
}

void RelayController::switch_on(const Words& words, Reply& reply, uint32_t now_ms) {
  int8_t i;
  if (!relay_argument(words, 2, 0, "ON <relay>", reply, &i)) return;
  const RelaySpec& relay = relays_[i];
  State& state = state_[i];
  if (state.active) {
    if (relay.mode == kButton) refuse(reply, "busy").word(relay.name);
    else reply.word("OK ON").word(relay.name);  // already on: no change, no lock
    return;
  }
  if (state.locked) {
    refuse(reply, "too-soon").word(relay.name).word_uint(wait_ms(i, now_ms));
    return;
  }
  drive(i, true, now_ms);
  reply.word("OK ON").word(relay.name);
  if (relay.mode == kButton) {
    state.hold_ms = relay.max_press_ms;  // held until OFF, but never longer than this
    reply.word_uint(relay.max_press_ms);
  }
}

void RelayController::switch_off(const Words& words, Reply& reply, uint32_t now_ms) {
  int8_t i;
  if (!relay_argument(words, 2, 0, "OFF <relay>", reply, &i)) return;
  const RelaySpec& relay = relays_[i];
  State& state = state_[i];
  // Ending a press is always allowed; a switch's change waits for its interval.
  if (state.active && relay.mode == kSwitch && state.locked) {
    refuse(reply, "too-soon").word(relay.name).word_uint(wait_ms(i, now_ms));
    return;
  }
  if (state.active) drive(i, false, now_ms);
  reply.word("OK OFF").word(relay.name);
}

void RelayController::status(const Words& words, Reply& reply, uint32_t now_ms) {
  if (words.count() != 1) {
    refuse(reply, "bad-args").word("STATUS");
    return;
  }
  reply.word("OK STATUS silent=").add_uint(silent_releases_);
  for (uint8_t i = 0; i < count_; ++i) {
    const State& state = state_[i];
    reply.word(relays_[i].name).add('=').add(state.active ? "on," : "idle,");
    if (state.active && relays_[i].mode == kButton) reply.add_uint(state.hold_ms - (now_ms - state.since_ms));
    else reply.add_uint(wait_ms(i, now_ms));
  }
}

void RelayController::limits(const Words& words, Reply& reply) {
  if (words.count() != 1) {
    refuse(reply, "bad-args").word("LIMITS");
    return;
  }
  reply.word("OK LIMITS timeout=").add_uint(host_timeout_ms_);
  for (uint8_t i = 0; i < count_; ++i) {
    const RelaySpec& relay = relays_[i];
    reply.word(relay.name).add('=').add(relay.mode == kButton ? "button," : "switch,");
    reply.add_uint(relay.default_press_ms).add(',').add_uint(relay.max_press_ms);
    reply.add(',').add_uint(relay.min_interval_ms);
  }
}

void RelayController::describe(Reply& reply) {
  reply.word("relays=");
  for (uint8_t i = 0; i < count_; ++i) {
    if (i) reply.add(',');
    reply.add(relays_[i].name);
  }
}

}  // namespace picluster
