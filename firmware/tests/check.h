// A very small check library for the host tests: a failed check prints where
// and what, and the program's exit status says whether any failed.
#ifndef PICLUSTER_TEST_CHECK_H
#define PICLUSTER_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include <string>

struct CheckTally {
  int checks = 0;
  int failures = 0;
};

inline CheckTally& tally() {
  static CheckTally t;
  return t;
}

inline void check(bool ok, const char* file, int line, const char* what) {
  ++tally().checks;
  if (!ok) {
    ++tally().failures;
    printf("FAIL %s:%d: %s\n", file, line, what);
  }
}

inline void check_text(const std::string& got, const std::string& want, const char* file, int line) {
  ++tally().checks;
  if (got != want) {
    ++tally().failures;
    printf("FAIL %s:%d:\n  got:  \"%s\"\n  want: \"%s\"\n", file, line, got.c_str(), want.c_str());
  }
}

#define CHECK(expr) check((expr), __FILE__, __LINE__, #expr)
#define CHECK_TEXT(got, want) check_text((got), (want), __FILE__, __LINE__)

typedef void (*TestFunction)();

struct TestCase {
  const char* name;
  TestFunction run;
};

// Runs every test, says how many checks failed; the exit status is 1 if any did.
inline int run_tests(const TestCase* tests, int count) {
  for (int i = 0; i < count; ++i) {
    int before = tally().failures;
    tests[i].run();
    printf("%s %s\n", tally().failures == before ? "ok  " : "FAIL", tests[i].name);
  }
  printf("%d checks, %d failed\n", tally().checks, tally().failures);
  return tally().failures ? 1 : 0;
}

#endif
