/* expect.h — the check macros of the C tests. A failed check prints where it failed and
 * what, counts the failure in expect_failures, and the test goes on (so one run reports
 * every broken check); main ends with `return expect_failures ? 1 : 0;`.
 *
 *   EXPECT(n == 3);                                  FAIL file.c:12: n == 3
 *   EXPECTF(rc == 0, "open %s: %s", path, e.msg);    FAIL file.c:13: open x: no such file
 *
 * Messages go to stderr (ctest captures both streams). One translation unit per test
 * program includes it (the counter is static). */
#ifndef MODA_TEST_EXPECT_H
#define MODA_TEST_EXPECT_H

#include <stdio.h>

static int expect_failures;

#define EXPECT(c)                                                                          \
    do {                                                                                   \
        if (!(c)) {                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);                   \
            expect_failures++;                                                             \
        }                                                                                  \
    } while (0)

#define EXPECTF(c, ...)                                                                    \
    do {                                                                                   \
        if (!(c)) {                                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                           \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            expect_failures++;                                                             \
        }                                                                                  \
    } while (0)

#endif
