/* moda bench train — time one MoDA adapter training step, optionally against PyTorch.
 *
 *   moda bench train [--model M] [--batch B] [--reps R] [--threads T] [--vs-torch]
 *                    [--python PY] [--script ref_adapter.py] [--json] [--device cpu|cuda|auto]
 *
 * One step = for each of B samples: frozen decoder with the hq token + adapter head
 * (forward), uncertain-point BCE + Dice, backward into the adapter; then one Adam update.
 * Inputs are synthetic (random embedding and early feature, a random GT map, a box prompt)
 * with the real shapes; PyTorch (tests/moda/ref_adapter.py bench) runs the same step on the
 * same shapes with the same thread count. Reported: the best of R timed steps (after one
 * warm-up step) for each, and the ratio ours / torch. On CUDA (--device cuda, or auto with a
 * device) the GPU step (train_bench_step on KN_DEV_CUDA: samples device-resident, the time
 * includes waiting for the device) is timed next to the CPU step from the same adapter.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "cmds.h"
#include "device.h"
#include "json.h"
#include "kn.h"
#include "paths.h"
#include "sam.h"
#include "train.h"

static const char *HELP =
    "usage: moda bench train [--model M] [--batch B] [--reps R] [--threads T] [--vs-torch]\n"
    "                        [--python PY] [--script PATH] [--json]\n\n"
    "Time one adapter training step (decoder + hq token + adapter forward, point loss,\n"
    "backward, Adam; batch B, default 4) on synthetic inputs of the real shapes.\n"
    "  --vs-torch     also time the same step in PyTorch (default python /usr/bin/python3,\n"
    "                 script tests/moda/ref_adapter.py next to the repo) and print the ratio\n"
    "  --reps R       timed steps after one warm-up (default 3; the best is reported)\n"
    "  --json         one JSON object on stdout\n"
    "  --device D     cpu, cuda or auto (default auto: cuda when a device is present). With\n"
    "                 cuda the GPU step is timed too, next to the CPU step (gpu_step_ms,\n"
    "                 cpu_step_ms, speedup); step_ms is the chosen device's. cuda without a\n"
    "                 device is an error (exit 2)\n";

int cmd_bench_train(int argc, char **argv)
{
    const char *model = NULL, *py = "/usr/bin/python3", *script = NULL, *device = NULL;
    int batch = 4, reps = 3, threads = 0, vs = 0, js = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            return 0;
        }
        if (!strcmp(a, "--vs-torch")) { vs = 1; continue; }
        if (!strcmp(a, "--json")) { js = 1; continue; }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "moda bench train: %s needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--python")) py = v;
        else if (!strcmp(a, "--script")) script = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--batch") || !strcmp(a, "--reps") || !strcmp(a, "--threads")) {
            if (client_int_opt("bench train", a, v, 1, 1024,
                               a[2] == 'b'   ? &batch
                               : a[2] == 'r' ? &reps
                                             : &threads))
                return 2;
        } else {
            fprintf(stderr, "moda bench train: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    err_t de = {0};
    device_choice_t dc;
    if (device_select(device, 1, &dc, &de)) {
        fprintf(stderr, "moda bench train: %s\n", de.msg);
        return 2;
    }
    device_log(&dc);
    char model_buf[4096], script_buf[4200];
    if (!model) {
        if (paths_default_model(model_buf, sizeof model_buf)) return 1;
        model = model_buf;
    }
    if (!script) {
        char dir[4096];
        if (paths_exe_dir(dir, sizeof dir)) return 1;
        snprintf(script_buf, sizeof script_buf, "%s/../../tests/moda/ref_adapter.py", dir);
        script = script_buf;
    }
    if (threads) kn_set_threads(threads);
    err_t e = {0};
    sam_t *sam = sam_load(model, &e);
    if (!sam) {
        fprintf(stderr, "moda bench train: %s\n", e.msg);
        return 1;
    }
    int ec = sam_early_channels(sam);
    train_set_t *ts = train_set_new(ec, &e);
    adapter_t *a = adapter_new(ec, &e);
    float *emb = malloc(sizeof(float) * SAM_EMB_C * 4096), *early = malloc(sizeof(float) * ec * 4096);
    uint8_t *mask = malloc(1024 * 768);
    int rc = (!ts || !a || !emb || !early || !mask) ? ERR_NOMEM : 0;
    if (!rc) rc = adapter_init_from_sam(a, sam_weights(sam), 0, &e);
    uint64_t rng = 42;
    prep_info_t info = {.h = 768, .w = 1024, .new_h = 768, .new_w = 1024};
    for (int s = 0; s < batch && !rc; s++) {
        for (int i = 0; i < SAM_EMB_C * 4096; i++) emb[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
        for (int i = 0; i < ec * 4096; i++) early[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
        for (int i = 0; i < 1024 * 768; i++) mask[i] = kn_rng_uniform(&rng) > 0.7f;
        rc = train_set_add_features(ts, &info, emb, early, mask, &e);
    }
    double ms = 0, gpu_ms = -1;
    adapter_t *ag = rc ? NULL : adapter_clone(a, &e); /* the GPU step starts where the CPU's did */
    if (!rc && !ag) rc = ERR_NOMEM;
    if (!rc) rc = train_bench_step(sam, ts, a, batch, reps, KN_DEV_CPU, &ms, &e);
    if (!rc && dc.device == KN_DEV_CUDA)
        rc = train_bench_step(sam, ts, ag, batch, reps, KN_DEV_CUDA, &gpu_ms, &e);
    adapter_destroy(&ag);
    if (rc) {
        fprintf(stderr, "moda bench train: %s\n", e.msg[0] ? e.msg : "out of memory");
        goto done;
    }
    double torch_ms = -1;
    char torch_ver[64] = "";
    if (vs) {
        char cmd[13000];
        snprintf(cmd, sizeof cmd, "%s %s bench %s --early %d --batch %d --reps %d --threads %d",
                 py, script, model, ec, batch, reps, kn_get_threads());
        FILE *p = popen(cmd, "r");
        char line[4096] = "";
        size_t got = p ? fread(line, 1, sizeof line - 1, p) : 0;
        line[got] = 0;
        int st = p ? pclose(p) : -1;
        json_t *j = st == 0 ? json_parse(line, strlen(line), &e) : NULL;
        const json_t *v = json_get(j, "torch_step_ms");
        if (!v || json_get_double(v, &torch_ms, "torch_step_ms", &e)) {
            fprintf(stderr, "moda bench train: the PyTorch run failed (%s)\n", cmd);
            json_free(&j);
            rc = ERR_IO;
            goto done;
        }
        const char *tv = json_str(json_get(j, "torch_version"));
        if (tv) snprintf(torch_ver, sizeof torch_ver, "%s", tv);
        json_free(&j);
    }
    double cpu_ms = ms;
    if (gpu_ms > 0) ms = gpu_ms; /* step_ms: the chosen device's */
    if (js) {
        printf("{\"step_ms\": %.3f, \"batch\": %d, \"threads\": %d, \"samples_per_s\": %.4f, "
               "\"device\": \"%s\", \"cpu_step_ms\": %.3f", ms, batch, kn_get_threads(),
               batch * 1e3 / ms, device_name(dc.device), cpu_ms);
        if (gpu_ms > 0)
            printf(", \"gpu_step_ms\": %.3f, \"speedup\": %.2f", gpu_ms, cpu_ms / gpu_ms);
        if (vs)
            printf(", \"torch_step_ms\": %.3f, \"ratio\": %.4f, \"torch_version\": \"%s\"", torch_ms,
                   cpu_ms / torch_ms, torch_ver);
        printf("}\n");
    } else {
        printf("adapter training step (batch %d, %d threads): %.1f ms (%.2f samples/s)\n", batch,
               kn_get_threads(), cpu_ms, batch * 1e3 / cpu_ms);
        if (gpu_ms > 0)
            printf("adapter training step on the GPU (batch %d, device-resident samples): %.2f ms "
                   "(%.1f samples/s, %.1fx the CPU step)\n", batch, gpu_ms, batch * 1e3 / gpu_ms,
                   cpu_ms / gpu_ms);
        if (vs)
            printf("PyTorch %s same step: %.1f ms  ->  ratio ours/torch %.2fx\n", torch_ver,
                   torch_ms, cpu_ms / torch_ms);
    }
done:
    free(emb);
    free(early);
    free(mask);
    adapter_destroy(&a);
    train_set_destroy(&ts);
    sam_destroy(&sam);
    return rc ? 1 : 0;
}
