// Runs the host tests of the board protocols; exit status 0 when every check passed.
#include <vector>

#include "check.h"

extern const TestCase kRelayTests[];
extern const int kRelayTestCount;
extern const TestCase kLightTests[];
extern const int kLightTestCount;

int main() {
  std::vector<TestCase> tests(kRelayTests, kRelayTests + kRelayTestCount);
  tests.insert(tests.end(), kLightTests, kLightTests + kLightTestCount);
  return run_tests(tests.data(), static_cast<int>(tests.size()));
}
