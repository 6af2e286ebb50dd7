// The lamp board's protocol code (the same PiClusterSerial sources the sketch
// uses) behind a pseudo-terminal, for testing a host program without the
// board: the daemon's serial lamp backend opens the pty as it would open
// /dev/picluster-lights.  Only the strip is emulated: each SHOW prints the
// frame the strip would get.
//
//   lamp_emulator [-n PIXELS] [-w] [-b BRIGHTNESS] [-i ID] [-s]
//
// -w: an RGBW strip.  -s: start the board (send HELLO) only when a line
// arrives on stdin, so that a test can open the port first.
// stdout, one line each:
//   PTY <path>
//   FRAME <RRGGBB[WW] per pixel, brightness applied>   on every SHOW
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "light_protocol.h"

namespace {

uint32_t now_ms() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint32_t>(now.tv_sec * 1000u + now.tv_nsec / 1000000u);
}

class EmulatedStrip : public picluster::LightIo {
 public:
  EmulatedStrip(int pty, uint16_t count, bool white) : pty_(pty), white_(white), frame_(count * 4u, 0) {}

  void send_line(const char* line) override {
    std::string text = std::string(line) + "\n";
    // Nobody may have the port open: what cannot be written is lost, as on a real USB port.
    if (write(pty_, text.data(), text.size()) < 0 && errno != EAGAIN && errno != EIO) perror("write");
  }
  bool save_id(const char*) override { return true; }
  void put_pixel(uint16_t index, uint8_t r, uint8_t g, uint8_t b, uint8_t w) override {
    uint8_t* p = &frame_[index * 4u];
    p[0] = r;
    p[1] = g;
    p[2] = b;
    p[3] = w;
  }
  void show() override {
    printf("FRAME ");
    for (size_t i = 0; i < frame_.size(); ++i) {
      if (i % 4 != 3 || white_) printf("%02x", frame_[i]);
    }
    printf("\n");
    fflush(stdout);
  }

 private:
  int pty_;
  bool white_;
  std::vector<uint8_t> frame_;
};

int open_pty() {
  int fd = posix_openpt(O_RDWR | O_NOCTTY);
  if (fd < 0 || grantpt(fd) < 0 || unlockpt(fd) < 0) {
    perror("pty");
    exit(1);
  }
  struct termios raw;
  tcgetattr(fd, &raw);
  cfmakeraw(&raw);
  tcsetattr(fd, TCSANOW, &raw);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

void usage(const char* name) {
  fprintf(stderr, "usage: %s [-n PIXELS] [-w] [-b BRIGHTNESS] [-i ID] [-s]\n", name);
  exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  unsigned long count = 32;
  unsigned long brightness = 255;
  bool white = false;
  bool wait_for_start = false;
  const char* id = "lamp-emulator";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-n" && i + 1 < argc) count = strtoul(argv[++i], nullptr, 10);
    else if (arg == "-b" && i + 1 < argc) brightness = strtoul(argv[++i], nullptr, 10);
    else if (arg == "-i" && i + 1 < argc) id = argv[++i];
    else if (arg == "-w") white = true;
    else if (arg == "-s") wait_for_start = true;
    else usage(argv[0]);
  }
  if (count < 1 || count > 1024 || brightness > 255) usage(argv[0]);

  int pty = open_pty();
  std::vector<uint8_t> pixels(count * 4u);
  EmulatedStrip strip(pty, static_cast<uint16_t>(count), white);
  picluster::LightController lamp(strip, pixels.data(), static_cast<uint16_t>(count), white,
                                  static_cast<uint8_t>(brightness), id, "power");
  printf("PTY %s\n", ptsname(pty));
  fflush(stdout);
  if (wait_for_start) {
    char line[16];
    if (!fgets(line, sizeof(line), stdin)) return 0;
  }
  lamp.begin(now_ms());
  for (;;) {
    struct pollfd poll_pty = {pty, POLLIN, 0};
    poll(&poll_pty, 1, 100);
    char buffer[256];
    ssize_t n = read(pty, buffer, sizeof(buffer));
    if (n < 0 && errno == EIO) usleep(10000);  // no one has the port open: wait for the host to come back
    for (ssize_t i = 0; i < n; ++i) lamp.receive(buffer[i], now_ms());
  }
}
