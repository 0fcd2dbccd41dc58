/* bank_tool.c — test helper: edits an adapter bank for the bankrun tests.
 *
 *   bank_tool strip-selector IN OUT   write IN without its selector.* tensors
 *   bank_tool info IN                 print "domains N selector S" (S = selector tensors)
 */
#include <stdio.h>
#include <string.h>

#include "adapter_bank.h"

int main(int argc, char **argv)
{
    err_t e = {0};
    if (argc < 3 || (strcmp(argv[1], "strip-selector") && strcmp(argv[1], "info")) ||
        (!strcmp(argv[1], "strip-selector") && argc != 4)) {
        fprintf(stderr, "usage: bank_tool strip-selector IN OUT | info IN\n");
        return 2;
    }
    abank_t *b = abank_load(argv[2], NULL, 0, &e);
    if (!b) {
        fprintf(stderr, "bank_tool: %s\n", e.msg);
        return 1;
    }
    int rc = 0;
    if (!strcmp(argv[1], "info")) {
        printf("domains %d selector %d\n", b->n_domains, b->n_selector);
    } else {
        abank_clear_selector(b);
        rc = abank_save(b, argv[3], &e);
        if (rc) fprintf(stderr, "bank_tool: %s\n", e.msg);
    }
    abank_destroy(&b);
    return rc ? 1 : 0;
}
