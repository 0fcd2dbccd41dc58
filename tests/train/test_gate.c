/* test_gate.c — moda-train's pure parts: the no-forgetting gate (gate.h) and the job state
 * file (tstate.h: round trip, missing file, corrupt file, atomic replace leaves no temp).
 * Expected verdicts are worked out by hand from the rules in gate.h. Exit 1 on any failure.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gate.h"
#include "tstate.h"
#include "expect.h"

static gate_domain_t dom(const char *name, int trained, int n, double cand, double ref, int zs)
{
    gate_domain_t g;
    memset(&g, 0, sizeof g);
    snprintf(g.name, sizeof g.name, "%s", name);
    g.trained = trained;
    g.n = n;
    g.cand_iou = cand;
    g.ref_iou = ref;
    g.ref_zeroshot = zs;
    return g;
}

static void test_gate(void)
{
    char why[2048];
    /* new domain vs zero-shot: 0.60 -> 0.70 is +10 points */
    gate_domain_t a[] = {dom("magtile", 1, 4, 0.70, 0.60, 1)};
    EXPECTF(gate_decide(a, 1, 1.0, 0.0, why, sizeof why) == 1, "+10 pts should pass: %s", why);
    EXPECTF(strstr(why, "zero-shot") && strstr(why, "+10.00"), "explanation: %s", why);
    EXPECTF(gate_decide(a, 1, 1.0, 10.0, why, sizeof why) == 0, "+10 pts is not > 10: %s", why);
    EXPECTF(gate_decide(a, 1, 1.0, 9.99, why, sizeof why) == 1, "+10 > 9.99: %s", why);
    /* equal to the reference is not beating it */
    gate_domain_t b[] = {dom("magtile", 1, 4, 0.60, 0.60, 0)};
    EXPECTF(gate_decide(b, 1, 1.0, 0.0, why, sizeof why) == 0, "no gain must refuse: %s", why);
    /* forgetting: other domain drops 1.5 pts with margin 1.0 -> refuse; with margin 2 -> pass */
    gate_domain_t c[] = {dom("bsdata", 0, 5, 0.785, 0.800, 0), dom("magtile", 1, 4, 0.7, 0.6, 1)};
    EXPECTF(gate_decide(c, 2, 1.0, 0.0, why, sizeof why) == 0, "1.5 pts drop > 1.0: %s", why);
    EXPECTF(strstr(why, "forgetting"), "names forgetting: %s", why);
    EXPECTF(gate_decide(c, 2, 2.0, 0.0, why, sizeof why) == 1, "1.5 pts drop <= 2.0: %s", why);
    /* exactly at the margin passes (drop <= margin) */
    gate_domain_t d[] = {dom("bsdata", 0, 5, 0.79, 0.80, 0), dom("magtile", 1, 4, 0.7, 0.6, 1)};
    EXPECTF(gate_decide(d, 2, 1.0 + 1e-9, 0.0, why, sizeof why) == 1, "drop == margin passes: %s",
            why);
    /* a negative margin demands improvement on every other domain */
    gate_domain_t e[] = {dom("bsdata", 0, 5, 0.80, 0.80, 0), dom("magtile", 1, 4, 0.7, 0.6, 1)};
    EXPECTF(gate_decide(e, 2, -0.5, 0.0, why, sizeof why) == 0, "negative margin: %s", why);
    /* other domain without holdout labels: skipped, not refused */
    gate_domain_t f[] = {dom("bsdata", 0, 0, 0, -1, 0), dom("magtile", 1, 4, 0.7, 0.6, 1)};
    EXPECTF(gate_decide(f, 2, 1.0, 0.0, why, sizeof why) == 1, "skip without holdout: %s", why);
    EXPECTF(strstr(why, "skipped"), "names the skip: %s", why);
    /* trained domain without holdout labels: refused */
    gate_domain_t g[] = {dom("magtile", 1, 0, 0, -1, 0)};
    EXPECTF(gate_decide(g, 1, 1.0, 0.0, why, sizeof why) == 0, "no holdout for trained: %s", why);
    /* no trained domain at all: refused */
    gate_domain_t h[] = {dom("bsdata", 0, 3, 0.9, 0.8, 0)};
    EXPECTF(gate_decide(h, 1, 1.0, 0.0, why, sizeof why) == 0, "no trained domain: %s", why);
    /* a tiny buffer is truncated, never overrun */
    char small[8];
    memset(small, 'x', sizeof small);
    EXPECTF(gate_decide(c, 2, 2.0, 0.0, small, 5) == 1, "verdict independent of the buffer");
    EXPECTF(small[4] == 0 && small[5] == 'x', "truncated within 5 bytes");
}

static void test_state(const char *dir)
{
    mkdir(dir, 0755);
    char path[512];
    snprintf(path, sizeof path, "%s/state.json", dir);
    remove(path);
    err_t err = {0};
    tstate_t *s = calloc(1, sizeof *s), *r = calloc(1, sizeof *r);
    EXPECTF(tstate_load(s, path, &err) == 0 && s->n == 0 && s->job.phase == TSTATE_IDLE,
            "missing file = empty: %s", err.msg);
    tstate_domain_t *d = tstate_domain(s, "magtile", 1);
    EXPECTF(d != NULL, "create domain");
    d->cursor = 12;
    d->tried = 40;
    d->version = 3;
    snprintf(d->result, sizeof d->result, "refused");
    EXPECTF(tstate_domain(s, "magtile", 1) == d, "same record");
    EXPECTF(tstate_domain(s, "nope", 0) == NULL, "absent without create");
    char longname[80];
    memset(longname, 'a', 70);
    longname[70] = 0;
    EXPECTF(tstate_domain(s, longname, 1) == NULL, "name > 64 refused");
    tstate_domain(s, "Line.3", 1)->cursor = 9007199254740993ULL; /* > 2^53: exact as an integer */
    s->job.phase = TSTATE_PUTTING;
    snprintf(s->job.id, sizeof s->job.id, "00ff00ff00ff00ff");
    snprintf(s->job.domain, sizeof s->job.domain, "magtile");
    s->job.cursor = 40;
    s->job.started_us = 1764400000000000LL;
    s->job.restarts = 2;
    EXPECTF(tstate_save(s, path, &err) == 0, "save: %s", err.msg);
    EXPECTF(tstate_load(r, path, &err) == 0, "load: %s", err.msg);
    EXPECTF(r->n == 2 && !strcmp(r->d[0].name, "magtile") && r->d[0].cursor == 12 &&
                r->d[0].tried == 40 && r->d[0].version == 3 && !strcmp(r->d[0].result, "refused"),
            "domain round trip");
    EXPECTF(!strcmp(r->d[1].name, "Line.3") && r->d[1].cursor == 9007199254740993ULL,
            "big cursor round trip: %llu", (unsigned long long)r->d[1].cursor);
    EXPECTF(r->job.phase == TSTATE_PUTTING && !strcmp(r->job.id, "00ff00ff00ff00ff") &&
                !strcmp(r->job.domain, "magtile") && r->job.cursor == 40 &&
                r->job.started_us == 1764400000000000LL && r->job.restarts == 2,
            "job round trip");
    /* no temp file left beside it */
    DIR *dd = opendir(dir);
    int others = 0;
    for (struct dirent *e; dd && (e = readdir(dd));)
        if (e->d_name[0] != '.' && strcmp(e->d_name, "state.json")) others++;
    if (dd) closedir(dd);
    EXPECTF(others == 0, "%d stray files in %s", others, dir);
    /* corrupt files are errors, not silent resets */
    const char *bad[] = {"{\"domains\":[{\"cursor\":1}]}", "{\"job\":{\"phase\":\"running\"}}", "{\"domains\":[", "nope",
                         "{\"domains\":[{\"name\":\"a\",\"cursor\":-4}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "wb");
        fputs(bad[i], f);
        fclose(f);
        err_clear(&err);
        EXPECTF(tstate_load(r, path, &err) != 0 && strstr(err.msg, "state.json"),
                "corrupt %zu refused: '%s'", i, err.msg);
    }
    free(s);
    free(r);
}

int main(int argc, char **argv)
{
    test_gate();
    test_state(argc > 1 ? argv[1] : "train_gate_state");
    if (expect_failures) {
        printf("%d check(s) failed\n", expect_failures);
        return 1;
    }
    printf("train gate/state: all checks passed\n");
    return 0;
}
