/* bankgen.c — writes a synthetic adapter bank (bank_synth) for the registry's script tests.
 *
 *   bankgen OUT N_DOMAINS DOMAIN_BYTES SEED [GEN0 GEN1 ...]
 * GENi changes domain i's tensors and metrics (0 when omitted). Canonical form.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bank.h"

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: bankgen OUT N_DOMAINS DOMAIN_BYTES SEED [GEN...]\n");
        return 2;
    }
    int n = atoi(argv[2]);
    if (n < 1 || n > 999) {
        fprintf(stderr, "bankgen: N_DOMAINS must be 1..999\n");
        return 2;
    }
    uint32_t gen[999] = {0};
    for (int i = 5; i < argc && i - 5 < n; i++) gen[i - 5] = (uint32_t)strtoul(argv[i], NULL, 10);
    void *b;
    size_t len;
    err_t err = {0};
    const char *base = getenv("BANKGEN_BASE");
    if (!base) base = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    if (bank_synth(n, (size_t)strtoull(argv[3], NULL, 10), (uint32_t)strtoul(argv[4], NULL, 10), gen, base, &b, &len,
                   &err)) {
        fprintf(stderr, "bankgen: %s\n", err.msg);
        return 1;
    }
    FILE *f = fopen(argv[1], "wb");
    int ok = f && fwrite(b, 1, len, f) == len;
    if (f && fclose(f)) ok = 0;
    free(b);
    if (!ok) {
        fprintf(stderr, "bankgen: cannot write %s\n", argv[1]);
        return 1;
    }
    return 0;
}
