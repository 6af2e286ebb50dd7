// Runs a board's compiled firmware (the .elf from build.sh) in simavr, with
// its UART0 on a pseudo-terminal and chosen pins watched, so that a test can
// talk to the firmware as the daemon would and see what the pins do.
//
//   simavr_board FIRMWARE.elf [-m atmega2560] [-f 16000000] [-w A0] [-w A2]... [-s]
//
// -s: power the MCU on only when a line arrives on stdin, so that a test can
// open the port first and read the boot announcement (a pty has no DTR line
// to reset the board with, as opening a real Mega's port does).
//
// stdout, one line each:
//   PTY <path>                the serial port to open (115200 8N1 or any: the pty ignores the baud rate)
//   PIN <port><bit> <0|1> <ms>  a watched pin changed, at this simulated time in milliseconds
//   STOPPED <state>           the simulated MCU stopped (crashed, or the firmware ended)
// The simulation never runs ahead of the wall clock, so that the host's
// keepalives keep the meaning they have with a real board; it may run behind.
//
// Built with g++ against Debian's libsimavr (libsimavr-dev, libsimavr2).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <deque>
#include <string>
#include <vector>

#include "avr_ioport.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_irq.h"
#include "sim_time.h"

namespace {

struct Bridge {
  avr_t* avr = nullptr;
  int pty = -1;
  bool accepting = true;  // the UART's input FIFO has room (XON) or not (XOFF)
  avr_irq_t* uart_input = nullptr;
  std::deque<uint8_t> to_board;
};

Bridge bridge;

double sim_ms(avr_t* avr) { return avr->cycle * 1000.0 / avr->frequency; }

void on_uart_output(avr_irq_t*, uint32_t value, void*) {
  uint8_t byte = static_cast<uint8_t>(value);
  // The test may not have opened the port yet; a byte the pty cannot take is dropped, as on a real USB port.
  if (write(bridge.pty, &byte, 1) < 0 && errno != EAGAIN && errno != EIO) perror("write pty");
}

void on_xon(avr_irq_t*, uint32_t, void*) { bridge.accepting = true; }
void on_xoff(avr_irq_t*, uint32_t, void*) { bridge.accepting = false; }

struct WatchedPin {
  std::string name;
  int level = -1;
};

void on_pin(avr_irq_t*, uint32_t value, void* param) {
  WatchedPin* pin = static_cast<WatchedPin*>(param);
  int level = value ? 1 : 0;
  if (level == pin->level) return;
  pin->level = level;
  printf("PIN %s %d %.3f\n", pin->name.c_str(), level, sim_ms(bridge.avr));
  fflush(stdout);
}

int open_pty() {
  int fd = posix_openpt(O_RDWR | O_NOCTTY);
  if (fd < 0 || grantpt(fd) < 0 || unlockpt(fd) < 0) {
    perror("pty");
    exit(1);
  }
  // Raw on both ends: the firmware's bytes pass unchanged ("\n" stays "\n").
  struct termios raw;
  tcgetattr(fd, &raw);
  cfmakeraw(&raw);
  tcsetattr(fd, TCSANOW, &raw);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

double wall_ms(const struct timespec& start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - start.tv_sec) * 1000.0 + (now.tv_nsec - start.tv_nsec) / 1e6;
}

void usage(const char* name) {
  fprintf(stderr, "usage: %s FIRMWARE.elf [-m MCU] [-f HZ] [-w PORTBIT]... [-s]  (e.g. -w A0)\n", name);
  exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  const char* mcu = "atmega2560";
  unsigned long frequency = 16000000;
  const char* path = nullptr;
  bool wait_for_start = false;
  std::vector<WatchedPin> pins;
  pins.reserve(16);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-m" && i + 1 < argc) mcu = argv[++i];
    else if (arg == "-f" && i + 1 < argc) frequency = strtoul(argv[++i], nullptr, 10);
    else if (arg == "-w" && i + 1 < argc && strlen(argv[i + 1]) == 2 && pins.size() < 16)
      pins.push_back({argv[++i], -1});
    else if (arg == "-s") wait_for_start = true;
    else if (arg[0] != '-' && !path) path = argv[i];
    else usage(argv[0]);
  }
  if (!path) usage(argv[0]);

  elf_firmware_t firmware;
  memset(&firmware, 0, sizeof(firmware));
  if (elf_read_firmware(path, &firmware) != 0) {
    fprintf(stderr, "cannot read %s\n", path);
    return 1;
  }
  if (!firmware.mmcu[0]) {  // an Arduino build names no MCU in the ELF
    snprintf(firmware.mmcu, sizeof(firmware.mmcu), "%s", mcu);
    firmware.frequency = static_cast<uint32_t>(frequency);
  }
  avr_t* avr = avr_make_mcu_by_name(firmware.mmcu);
  if (!avr) {
    fprintf(stderr, "simavr does not know the MCU %s\n", firmware.mmcu);
    return 1;
  }
  avr_init(avr);
  avr_load_firmware(avr, &firmware);
  bridge.avr = avr;
  bridge.pty = open_pty();

  uint32_t uart = AVR_IOCTL_UART_GETIRQ('0');
  avr_irq_register_notify(avr_io_getirq(avr, uart, UART_IRQ_OUTPUT), on_uart_output, nullptr);
  avr_irq_register_notify(avr_io_getirq(avr, uart, UART_IRQ_OUT_XON), on_xon, nullptr);
  avr_irq_register_notify(avr_io_getirq(avr, uart, UART_IRQ_OUT_XOFF), on_xoff, nullptr);
  bridge.uart_input = avr_io_getirq(avr, uart, UART_IRQ_INPUT);
  for (WatchedPin& pin : pins) {
    char port = pin.name[0];
    int bit = pin.name[1] - '0';
    avr_irq_t* irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(port), bit);
    if (!irq || bit < 0 || bit > 7) {
      fprintf(stderr, "no pin %s on %s\n", pin.name.c_str(), firmware.mmcu);
      return 1;
    }
    avr_irq_register_notify(irq, on_pin, &pin);
  }

  printf("PTY %s\n", ptsname(bridge.pty));
  fflush(stdout);
  if (wait_for_start) {
    char line[16];
    if (!fgets(line, sizeof(line), stdin)) return 0;
  }

  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  int state = cpu_Running;
  while (state != cpu_Done && state != cpu_Crashed) {
    for (int step = 0; step < 2000 && state != cpu_Done && state != cpu_Crashed; ++step) state = avr_run(avr);
    uint8_t buffer[64];
    ssize_t n = read(bridge.pty, buffer, sizeof(buffer));
    for (ssize_t i = 0; i < n; ++i) bridge.to_board.push_back(buffer[i]);
    while (bridge.accepting && !bridge.to_board.empty()) {
      avr_raise_irq(bridge.uart_input, bridge.to_board.front());
      bridge.to_board.pop_front();
    }
    double ahead = sim_ms(avr) - wall_ms(start);
    if (ahead > 1) usleep(static_cast<useconds_t>(ahead * 1000));
  }
  printf("STOPPED %s\n", state == cpu_Crashed ? "crashed" : "done");
  fflush(stdout);
  return 0;
}
