/* test_device.c — `--device cpu|cuda|auto` resolution (common/device.h), checked against the
 * device count this machine really has (kcu_device_probe). Runs everywhere (label unit): on a
 * machine without a GPU, auto must pick the CPU and say why, cuda must fail. */
#include "device.h"
#include "kn_cuda.h"
#include "expect.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
    char why[256] = "";
    int n = kcu_device_probe(why, sizeof why);
    EXPECTF(n == kn_cuda_device_count(), "probe %d vs kn_cuda_device_count %d", n,
            kn_cuda_device_count());
    EXPECTF(n > 0 || why[0], "no device but no reason");
    device_choice_t c;
    err_t e = {0};

    EXPECTF(device_select("cpu", 1, &c, &e) == 0 && c.device == KN_DEV_CPU, "cpu -> cpu");
    EXPECTF(!strcmp(c.reason, "requested"), "cpu reason '%s'", c.reason);

    EXPECTF(device_select("bogus", 1, &c, &e) == ERR_INVALID, "bogus -> ERR_INVALID");
    EXPECTF(strstr(e.msg, "bogus") != NULL, "message names the value: '%s'", e.msg);

    int rc = device_select(NULL, 1, &c, &e); /* NULL = auto */
    EXPECTF(rc == 0 && c.requested == DEVICE_REQ_AUTO, "NULL -> auto");
    if (n > 0) {
        EXPECTF(c.device == KN_DEV_CUDA, "auto with %d devices -> cuda", n);
    } else {
        EXPECTF(c.device == KN_DEV_CPU, "auto without a device -> cpu");
        EXPECTF(strstr(c.reason, "no CUDA device") && strstr(c.reason, why),
                "auto reason '%s' names the probe's '%s'", c.reason, why);
    }
    rc = device_select("auto", 0, &c, &e); /* no GPU path */
    EXPECTF(rc == 0 && c.device == KN_DEV_CPU, "auto without a GPU path -> cpu");

    rc = device_select("cuda", 1, &c, &e);
    if (n > 0)
        EXPECTF(rc == 0 && c.device == KN_DEV_CUDA, "cuda with a device");
    else
        EXPECTF(rc == ERR_DEVICE && strstr(e.msg, "no CUDA device"),
                "cuda without a device: rc %d '%s'", rc, e.msg);

    /* device_require_path on a choice that picked CUDA (built by hand, device-independent) */
    device_choice_t g = {.requested = DEVICE_REQ_AUTO, .device = KN_DEV_CUDA, .cuda_devices = 1};
    EXPECTF(device_require_path(&g, 1, "x", &e) == 0 && g.device == KN_DEV_CUDA, "path present");
    EXPECTF(device_require_path(&g, 0, "vit_b", &e) == 0 && g.device == KN_DEV_CPU &&
                strstr(g.reason, "vit_b"),
            "auto falls back, reason '%s'", g.reason);
    device_choice_t h = {.requested = DEVICE_REQ_CUDA, .device = KN_DEV_CUDA, .cuda_devices = 1};
    EXPECTF(device_require_path(&h, 0, "vit_b", &e) == ERR_UNSUPPORTED && strstr(e.msg, "vit_b"),
            "cuda without a path is an error: '%s'", e.msg);
    printf("%s (devices %d%s%s)\n", expect_failures ? "FAILED" : "ok", n, n ? "" : ": ",
           n ? "" : why);
    return expect_failures ? 1 : 0;
}
