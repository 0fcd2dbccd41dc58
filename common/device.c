/* device.c — parse and resolve `--device cpu|cuda|auto` (device.h). */
#include "device.h"

#include <stdio.h>
#include <string.h>

#include "kn_cuda.h"
#include "log.h"

const char *device_name(kn_device_t d)
{
    return d == KN_DEV_CUDA ? "cuda" : "cpu";
}

const char *device_req_name(device_req_t r)
{
    return r == DEVICE_REQ_CPU ? "cpu" : r == DEVICE_REQ_CUDA ? "cuda" : "auto";
}

int device_parse(const char *s, device_req_t *req, err_t *err)
{
    if (!s || !strcmp(s, "auto")) *req = DEVICE_REQ_AUTO;
    else if (!strcmp(s, "cpu")) *req = DEVICE_REQ_CPU;
    else if (!strcmp(s, "cuda")) *req = DEVICE_REQ_CUDA;
    else return err_set(err, ERR_INVALID, "--device '%s': use cpu, cuda or auto", s);
    return 0;
}

int device_select(const char *s, int gpu_path, device_choice_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    out->device = KN_DEV_CPU;
    int rc = device_parse(s, &out->requested, err);
    if (rc) {
        snprintf(out->reason, sizeof out->reason, "bad --device value");
        return rc;
    }
    if (out->requested == DEVICE_REQ_CPU) {
        snprintf(out->reason, sizeof out->reason, "requested");
        return 0;
    }
    char why[200] = "";
    out->cuda_devices = kcu_device_probe(why, sizeof why);
    if (out->cuda_devices <= 0) {
        snprintf(out->reason, sizeof out->reason, "no CUDA device (%s)", why);
        if (out->requested == DEVICE_REQ_CUDA)
            return err_set(err, ERR_DEVICE, "--device cuda: no CUDA device (%s)", why);
        return 0;
    }
    if (!gpu_path) {
        snprintf(out->reason, sizeof out->reason,
                 "%d CUDA device(s) but this command has no GPU path yet", out->cuda_devices);
        if (out->requested == DEVICE_REQ_CUDA)
            return err_set(err, ERR_UNSUPPORTED, "--device cuda: this command has no GPU path yet "
                                                 "(use --device cpu)");
        return 0;
    }
    out->device = KN_DEV_CUDA;
    snprintf(out->reason, sizeof out->reason, "%s, %d CUDA device(s)",
             out->requested == DEVICE_REQ_CUDA ? "requested" : "auto", out->cuda_devices);
    return 0;
}

int device_require_path(device_choice_t *c, int have_path, const char *what, err_t *err)
{
    if (c->device != KN_DEV_CUDA || have_path) return 0;
    if (c->requested == DEVICE_REQ_CUDA)
        return err_set(err, ERR_UNSUPPORTED, "--device cuda: no GPU path for %s yet (use --device "
                                             "cpu)", what);
    c->device = KN_DEV_CPU;
    snprintf(c->reason, sizeof c->reason, "%d CUDA device(s) but no GPU path for %s yet",
             c->cuda_devices, what);
    return 0;
}

void device_log(const device_choice_t *c)
{
    log_info("event=device device=%s requested=%s reason=\"%s\"", device_name(c->device),
             device_req_name(c->requested), c->reason);
}
