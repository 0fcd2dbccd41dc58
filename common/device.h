/* device.h — the `--device cpu|cuda|auto` choice shared by every command that computes.
 *
 *   device_choice_t c;
 *   if (device_select(flag_value_or_NULL, gpu_path, &c, &err)) { print err.msg; exit 2; }
 *   device_log(&c);        // one line: event=device device=cpu requested=auto reason=...
 *   if (c.device == KN_DEV_CUDA) ... GPU path ... else ... CPU path ...
 *
 * Rules: `cpu` always gives the CPU. `auto` (the default, also for NULL) gives CUDA when
 * kn_cuda_device_count() > 0 and the command has a GPU path (gpu_path != 0), else the CPU,
 * with the reason (no device and why — e.g. "cudaGetDeviceCount: code 35 (...)" —, build
 * without CUDA, or no GPU path for this command yet). `cuda` without a device or without a
 * GPU path is an error (the caller exits 2). Pure: device_select never prints.
 */
#ifndef MODA_DEVICE_H
#define MODA_DEVICE_H

#include "err.h"
#include "kn.h"

typedef enum { DEVICE_REQ_AUTO = 0, DEVICE_REQ_CPU = 1, DEVICE_REQ_CUDA = 2 } device_req_t;

typedef struct device_choice {
    device_req_t requested;
    kn_device_t device; /* what to run on */
    int cuda_devices;   /* kn_cuda_device_count() at selection */
    char reason[256];   /* one line, no newline */
} device_choice_t;

/* "cpu" | "cuda" | "auto" (NULL = "auto") → *req. ERR_INVALID (message names the value). */
int device_parse(const char *s, device_req_t *req, err_t *err);
/* Parses and resolves as above into *out. ERR_INVALID (bad value), ERR_DEVICE (cuda requested,
 * no device), ERR_UNSUPPORTED (cuda requested, no GPU path here). out is always filled. */
int device_select(const char *s, int gpu_path, device_choice_t *out, err_t *err);
/* After select: when c chose CUDA but the work at hand has no GPU path (have_path == 0, e.g.
 * a ViT encoder or a bank), `auto` falls back to the CPU (reason names `what`) and `cuda` is
 * ERR_UNSUPPORTED. Returns 0 otherwise. */
int device_require_path(device_choice_t *c, int have_path, const char *what, err_t *err);
/* Logs the choice as one info line: event=device device=<cpu|cuda> requested=<...> reason="..." */
void device_log(const device_choice_t *c);
/* "cpu" / "cuda" / "auto" */
const char *device_name(kn_device_t d);
const char *device_req_name(device_req_t r);

#endif
