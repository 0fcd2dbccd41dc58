/* test_device.c — `--device cpu|cuda|auto` resolution (common/device.h), checked against the
 * device count this machine really has (kcu_device_probe). Runs everywhere (label unit): on a
 * machine without a GPU, auto must pick the CPU and say why, cuda must fail. */
#include "device.h"
#include "kn_cuda.h"

#include <stdio.h>
#include <string.h>

static int failures;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                          \
            printf(__VA_ARGS__);                                                                  \
            printf("\n");                                                                         \
            failures++;                                                                           \
        }                                                                                         \
    } while (0)

int main(void)
{
    char why[256] = "";
    int n = kcu_device_probe(why, sizeof why);
    EXPECT(n == kn_cuda_device_count(), "probe %d vs kn_cuda_device_count %d", n,
          kn_cuda_device_count());
    EXPECT(n > 0 || why[0], "no device but no reason");
    device_choice_t c;
    err_t e = {0};

    EXPECT(device_select("cpu", 1, &c, &e) == 0 && c.device == KN_DEV_CPU, "cpu -> cpu");
    EXPECT(!strcmp(c.reason, "requested"), "cpu reason '%s'", c.reason);

    EXPECT(device_select("bogus", 1, &c, &e) == ERR_INVALID, "bogus -> ERR_INVALID");
    EXPECT(strstr(e.msg, "bogus") != NULL, "message names the value: '%s'", e.msg);

    int rc = device_select(NULL, 1, &c, &e); /* NULL = auto */
    EXPECT(rc == 0 && c.requested == DEVICE_REQ_AUTO, "NULL -> auto");
    if (n > 0) {
        EXPECT(c.device == KN_DEV_CUDA, "auto with %d devices -> cuda", n);
    } else {
        EXPECT(c.device == KN_DEV_CPU, "auto without a device -> cpu");
        EXPECT(strstr(c.reason, "no CUDA device") && strstr(c.reason, why),
              "auto reason '%s' names the probe's '%s'", c.reason, why);
    }
    rc = device_select("auto", 0, &c, &e); /* no GPU path */
    EXPECT(rc == 0 && c.device == KN_DEV_CPU, "auto without a GPU path -> cpu");

    rc = device_select("cuda", 1, &c, &e);
    if (n > 0)
        EXPECT(rc == 0 && c.device == KN_DEV_CUDA, "cuda with a device");
    else
        EXPECT(rc == ERR_DEVICE && strstr(e.msg, "no CUDA device"), "cuda without a device: rc %d '%s'",
              rc, e.msg);

    /* device_require_path on a choice that picked CUDA (built by hand, device-independent) */
    device_choice_t g = {.requested = DEVICE_REQ_AUTO, .device = KN_DEV_CUDA, .cuda_devices = 1};
    EXPECT(device_require_path(&g, 1, "x", &e) == 0 && g.device == KN_DEV_CUDA, "path present");
    EXPECT(device_require_path(&g, 0, "vit_b", &e) == 0 && g.device == KN_DEV_CPU &&
              strstr(g.reason, "vit_b"),
          "auto falls back, reason '%s'", g.reason);
    device_choice_t h = {.requested = DEVICE_REQ_CUDA, .device = KN_DEV_CUDA, .cuda_devices = 1};
    EXPECT(device_require_path(&h, 0, "vit_b", &e) == ERR_UNSUPPORTED && strstr(e.msg, "vit_b"),
          "cuda without a path is an error: '%s'", e.msg);
    printf("%s (devices %d%s%s)\n", failures ? "FAILED" : "ok", n, n ? "" : ": ", n ? "" : why);
    return failures ? 1 : 0;
}
