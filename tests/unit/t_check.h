/* t_check.h — minimal checks for the unit tests in tests/unit and tests/integration.
 * A failed check prints file:line and the expression and is counted; t_done() turns the count
 * into the exit status. t_watchdog() arms alarm() so a test can never hang. */
#ifndef MODA_T_CHECK_H
#define MODA_T_CHECK_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int t_failed, t_checks;

#define T(cond)                                                                            \
    do {                                                                                   \
        t_checks++;                                                                        \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                \
            t_failed++;                                                                    \
        }                                                                                  \
    } while (0)

/* Check that string s contains sub; prints both when not. */
#define T_HAS(s, sub)                                                                      \
    do {                                                                                   \
        const char *t_s_ = (s), *t_sub_ = (sub);                                           \
        t_checks++;                                                                        \
        if (!t_s_ || !strstr(t_s_, t_sub_)) {                                              \
            fprintf(stderr, "FAIL %s:%d: '%s' does not contain '%s'\n", __FILE__, __LINE__, \
                    t_s_ ? t_s_ : "(null)", t_sub_);                                       \
            t_failed++;                                                                    \
        }                                                                                  \
    } while (0)

static inline void t_watchdog(unsigned seconds)
{
    alarm(seconds); /* default SIGALRM action terminates: a hang becomes a failure */
}

static inline int t_done(const char *name)
{
    if (t_failed) {
        fprintf(stderr, "%s: %d of %d checks failed\n", name, t_failed, t_checks);
        return 1;
    }
    printf("%s: all %d checks passed\n", name, t_checks);
    return 0;
}

#endif
