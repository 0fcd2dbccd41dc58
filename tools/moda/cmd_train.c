/* moda train-domain — learn (or relearn) one domain's adapter and write the new bank.
 *
 *   moda train-domain [--bank IN] --out OUT --domain NAME --data DOMAIN_DIR [--epochs N]
 *                     [--lr X] [--seed S] [--model M] [--threads T] [--max-train N]
 *                     [--max-test N] [--prompts mixed|box] [--replay K] [--no-eval] [--quiet]
 *                     [--device cpu|cuda|auto]
 *
 * Reads IN (absent or missing file: a new bank for the model) and adds NAME with the MoDA
 * engine (learn.h: adapter trained on DOMAIN_DIR's train split from the zero-shot start, K
 * replay samples kept, selector retrained on every domain's replay buffer), evaluates it on
 * the test split against zero-shot SAM (box and no-prompt modes, selection accuracy; the
 * numbers go into the domain's metrics) and writes OUT. Other domains' adapters are copied
 * unchanged.
 * Exit 0 ok, 2 bad arguments or data, 1 other failures.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "adapter_bank.h"
#include "client.h"
#include "cmds.h"
#include "dataset.h"
#include "device.h"
#include "kn.h"
#include "learn.h"
#include "paths.h"
#include "sam.h"
#include "train.h"

static const char *HELP =
    "usage: moda train-domain [--bank IN] --out OUT --domain NAME --data DOMAIN_DIR\n"
    "                         [--epochs N] [--lr X] [--seed S] [--model M] [--threads T]\n"
    "                         [--max-train N] [--max-test N] [--prompts mixed|box]\n"
    "                         [--replay K] [--no-eval] [--quiet] [--device D]\n\n"
    "Train the MoDA adapter of one domain and write the updated adapter bank.\n\n"
    "  --bank IN        existing bank (may be omitted or not exist yet for the first domain)\n"
    "  --out OUT        the bank to write (may equal IN)\n"
    "  --domain NAME    domain name, [a-z0-9_-]{1,64}; an existing domain is retrained\n"
    "  --data DIR       <DIR>/images, <DIR>/masks (0/255 PNG), <DIR>/split.txt\n"
    "  --epochs N       training epochs (default 8, the recipe of docs/moda.md; lr x0.1 from\n"
    "                   epoch floor(2N/3))\n"
    "  --lr X           Adam learning rate (default 1e-5; the paper's 1e-3 diverges here,\n"
    "                   docs/moda.md)\n"
    "  --warmup N       ramp the learning rate linearly over the first N steps (default 0)\n"
    "  --seed S         RNG seed (default 0); same seed + same --threads = same bank\n"
    "  --model M        SAM weights (default: $MODA_MODEL, else .deps/models/mobile_sam.safetensors)\n"
    "  --threads T      CPU threads (default: all cores)\n"
    "  --max-train N    use only N train samples, spread over the split (default: all)\n"
    "  --max-test N     evaluate on only N test samples, spread over the split (default: all)\n"
    "  --prompts KIND   training prompts: mixed (default: box 40%, points 30%, noisy mask 10%,\n"
    "                   none 20%) or box (box prompts only, the paper's evaluation protocol)\n"
    "  --replay K       labelled samples kept in the bank for selector retraining (default 10)\n"
    "  --no-eval        skip the test-split evaluation\n"
    "  --quiet          no progress lines\n"
    "  --device D       where the adapter training step runs: cpu (default: bit-reproducible\n"
    "                   for a fixed --threads), cuda (GPU step; same prompts and points, losses\n"
    "                   within float rounding) or auto (cuda when a device is present). The\n"
    "                   encoder, the selector and the evaluation stay on the CPU\n";

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void progress(const train_progress_t *p, void *ctx)
{
    (void)ctx;
    printf("epoch %d/%d  loss %.4f  lr %.0e  %.2f samples/s  step %d/%d  ETA %.0f s\n", p->epoch,
           p->epochs, p->loss, (double)p->lr, p->samples_per_s, p->step, p->steps, p->eta_s);
    fflush(stdout);
}

static void note(const char *line, void *ctx)
{
    (void)ctx;
    printf("%s\n", line);
    fflush(stdout);
}

int cmd_train(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *name = NULL, *data = NULL, *model = NULL;
    const char *device = "cpu";
    int epochs = 0, seed = 0, threads = 0, max_train = 0, max_test = 0;
    int replay = ABANK_DEFAULT_REPLAY, warmup = 0;
    int no_eval = 0, quiet = 0, box_only = 0;
    double lr = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            return 0;
        }
        if (!strcmp(a, "--no-eval")) { no_eval = 1; continue; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v || strncmp(a, "--", 2)) {
            fprintf(stderr, "moda train-domain: %s '%s' (see --help)\n",
                    v ? "unknown argument" : "missing value after", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--bank")) in = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--domain")) name = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--prompts")) {
            if (strcmp(v, "mixed") && strcmp(v, "box")) {
                fprintf(stderr, "moda train-domain: --prompts '%s': use mixed or box\n", v);
                return 2;
            }
            box_only = !strcmp(v, "box");
        } else if (!strcmp(a, "--lr")) {
            char *end;
            lr = strtod(v, &end);
            if (*end || !(lr > 0 && lr < 1)) {
                fprintf(stderr, "moda train-domain: --lr '%s': need a number in (0, 1)\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--epochs")) {
            if (client_int_opt("train-domain", a, v, 1, 10000, &epochs)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (client_int_opt("train-domain", a, v, 0, INT_MAX, &seed)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (client_int_opt("train-domain", a, v, 1, 1024, &threads)) return 2;
        } else if (!strcmp(a, "--max-train")) {
            if (client_int_opt("train-domain", a, v, 1, 1000000, &max_train)) return 2;
        } else if (!strcmp(a, "--warmup")) {
            if (client_int_opt("train-domain", a, v, 0, 1000000, &warmup)) return 2;
        } else if (!strcmp(a, "--max-test")) {
            if (client_int_opt("train-domain", a, v, 1, 1000000, &max_test)) return 2;
        } else if (!strcmp(a, "--replay")) {
            if (client_int_opt("train-domain", a, v, 0, 1000, &replay)) return 2;
        } else {
            fprintf(stderr, "moda train-domain: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!out || !name || !data) {
        fprintf(stderr, "moda train-domain: %s is required (see --help)\n",
                !out ? "--out" : !name ? "--domain" : "--data");
        return 2;
    }
    err_t e = {0};
    device_choice_t dc;
    if (device_select(device, 1, &dc, &e)) {
        fprintf(stderr, "moda train-domain: %s\n", e.msg);
        return 2;
    }
    device_log(&dc);
    int rc = 0;
    char model_buf[4096];
    if (!model) {
        if (paths_default_model(model_buf, sizeof model_buf)) {
            fprintf(stderr, "moda train-domain: default model path too long\n");
            return 1;
        }
        model = model_buf;
    }
    if (threads) kn_set_threads((int)threads);
    double t_start = now_s();
    sam_t *sam = NULL;
    abank_t *bank = NULL;
    train_set_t *tr = NULL, *te = NULL;
    abank_replay_t *rp = NULL;
    int nrp = 0;
    /* data first: bad folders are reported before the slow model load */
    dataset_t *ds = dataset_open(data, &e);
    if (!ds) {
        fprintf(stderr, "moda train-domain: %s\n", e.msg);
        return 2;
    }
    sam = sam_load(model, &e);
    if (!sam) goto fail;
    char hash[65];
    wts_content_hash(sam_weights(sam), hash);
    int early_c = sam_early_channels(sam);
    struct stat st;
    if (in && stat(in, &st) == 0) {
        bank = abank_load(in, hash, early_c, &e);
        if (!bank) goto fail;
        if (!quiet) printf("bank %s: %d domain(s)\n", in, bank->n_domains);
    } else {
        if (in && !quiet) printf("bank %s does not exist: starting a new bank\n", in);
        bank = abank_new(hash, &e);
        if (!bank) goto fail;
    }
    if (!(tr = train_set_new(early_c, &e))) goto fail;
    if ((rc = learn_load_split(sam, ds, DS_TRAIN, (int)max_train, tr, quiet ? NULL : note, NULL,
                               &e)))
        goto fail;
    if ((rc = learn_replay_from_dataset(ds, (int)replay, &rp, &nrp, &e))) goto fail;
    learn_cfg_t lc;
    learn_cfg_default(&lc);
    if (epochs > 0) lc.train.epochs = (int)epochs;
    if (lr > 0) lc.train.lr = (float)lr;
    lc.train.seed = (uint64_t)seed;
    lc.train.warmup_steps = (int)warmup;
    lc.train.device = dc.device;
    lc.replay = (int)replay;
    lc.sel_seed = (uint64_t)seed;
    if (box_only) lc.train.share_box = 1.0f;
    if (!quiet) {
        lc.train.progress = progress;
        lc.note = note;
        printf("training '%s' on %d samples, %d epochs, lr %.0e, batch %d, %d threads\n", name,
               tr->n, lc.train.epochs, (double)lc.train.lr, lc.train.batch, kn_get_threads());
        fflush(stdout);
    }
    learn_result_t res;
    if ((rc = learn_add_domain(sam, bank, name, tr, rp, nrp, NULL, 0, &lc, &res, &e))) goto fail;
    if (!no_eval) {
        if (!(te = train_set_new(early_c, &e))) goto fail;
        if (bank->n_domains > 1) train_set_keep_taps(te);
        if ((rc = learn_load_split(sam, ds, DS_TEST, (int)max_test, te, quiet ? NULL : note,
                                   NULL, &e)))
            goto fail;
        learn_eval_t ev[2];
        double zs[2];
        for (int p = 0; p < 2 && !rc; p++) {
            int prompt = p ? TRAIN_PROMPT_AUTO : TRAIN_PROMPT_BOX;
            rc = learn_eval_bank(sam, bank, name, te, prompt, &ev[p], NULL, NULL, &e);
            if (!rc) rc = train_eval(sam, te, NULL, prompt, &zs[p], NULL, &e);
        }
        if (rc) goto fail;
        abank_domain_t *d = abank_find(bank, name);
        const struct { const char *k; double v; } add[] = {
            {"test_iou_box", ev[0].oracle_iou}, {"zeroshot_iou_box", zs[0]},
            {"test_iou_auto", ev[1].oracle_iou}, {"zeroshot_iou_auto", zs[1]},
            {"test_selection_accuracy", ev[0].sel_acc}};
        for (size_t i = 0; i < sizeof add / sizeof add[0] && d->n_metrics < ABANK_MAX_METRICS; i++) {
            snprintf(d->metrics[d->n_metrics].name, sizeof d->metrics[0].name, "%s", add[i].k);
            d->metrics[d->n_metrics++].value = add[i].v;
        }
        printf("test IoU (%d images): box %.1f%% (zero-shot SAM %.1f%%), no prompt %.1f%% "
               "(zero-shot %.1f%%)", te->n, 100 * ev[0].oracle_iou, 100 * zs[0],
               100 * ev[1].oracle_iou, 100 * zs[1]);
        if (bank->n_domains > 1)
            printf("; selector picks '%s' for %.1f%% (box IoU with selection %.1f%%)", name,
                   100 * ev[0].sel_acc, 100 * ev[0].iou);
        printf("\n");
    }
    if ((rc = abank_save(bank, out, &e))) goto fail;
    printf("wrote %s: %d domain(s); '%s' trained in %.0f s (box-prompt loss on the train set "
           "%.4f -> %.4f, %.0f ms/step), total %.0f s\n", out, bank->n_domains, name,
           res.train.seconds, res.train.fixed_before, res.train.fixed_after, res.train.step_ms,
           now_s() - t_start);
    goto done;
fail:
    if (!rc) rc = e.code ? e.code : ERR_INVALID;
    fprintf(stderr, "moda train-domain: %s\n", e.msg);
done:
    learn_replay_free(&rp, nrp);
    train_set_destroy(&tr);
    train_set_destroy(&te);
    abank_destroy(&bank);
    sam_destroy(&sam);
    dataset_close(&ds);
    return rc ? err_exit_status(rc) : 0;
}
