/* seg_bank.c — `moda segment --bank`: segment with a domain's MoDA adapter (used by
 * cmd_segment.c; declared in cmds.h).
 *
 * Domain choice: --domain NAME forces one; otherwise a bank with one domain uses it, and a
 * bank with several needs the selector (selector.* tensors, trained by train-domain once the
 * selector module exists) — until then the error asks for --domain. Prompts: the given
 * points/box, or none (--prompt auto: SAM's padding point only, the promptless mode the
 * adapters are trained for).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_bank.h"
#include "cmds.h"
#include "postprocess.h"

int seg_bank_predict(sam_t *sam, const sam_embedding_t *emb, const sam_prompt_t *p,
                     const char *bank_path, const char *domain, uint8_t *mask, char *chosen,
                     size_t chosen_n, float *prob, err_t *err)
{
    char hash[65];
    wts_content_hash(sam_weights(sam), hash);
    abank_t *b = abank_load(bank_path, hash, sam_early_channels(sam), err);
    if (!b) return err->code ? err->code : ERR_FORMAT;
    int rc = 0;
    samdec_t *dec = NULL;
    adp_work_t *w = NULL;
    float *logits = NULL, *full = NULL;
    const abank_domain_t *d = NULL;
    *prob = -1.0f;
    if (domain) {
        d = abank_find(b, domain);
        if (!d) {
            char names[512] = "";
            for (int i = 0; i < b->n_domains; i++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                         b->domains[i].name);
            rc = err_set(err, ERR_NOTFOUND, "bank '%s' has no domain '%s' (it has: %s)", bank_path,
                         domain, names);
            goto done;
        }
    } else if (b->n_domains == 1) {
        d = &b->domains[0];
        *prob = 2.0f; /* no choice made: the only domain */
    } else {
        rc = err_set(err, ERR_UNSUPPORTED,
                     "bank '%s' has %d domains and this build has no selector yet: pass --domain NAME",
                     bank_path, b->n_domains);
        goto done;
    }
    snprintf(chosen, chosen_n, "%s", d->name);
    sam_point_t pts[SAM_MAX_POINTS + 2];
    int n;
    if (p) {
        n = sam_prompt_points(&emb->info, p, pts, err);
        if (n < 0) {
            rc = n;
            goto done;
        }
    } else {
        pts[0] = (sam_point_t){0, 0, -1.0f};
        n = 1;
    }
    dec = samdec_new(sam_weights(sam), err);
    w = dec ? adp_work_new(d->adapter->early_c, err) : NULL;
    logits = malloc(sizeof(float) * SAM_LOWRES * SAM_LOWRES);
    full = malloc(sizeof(float) * (size_t)emb->info.h * emb->info.w);
    if (!dec || !w || !logits || !full) {
        rc = err->code ? err->code : err_set(err, ERR_NOMEM, "out of memory");
        goto done;
    }
    rc = adapter_forward(d->adapter, dec, w, emb->emb, emb->early, pts, n, NULL, logits, NULL,
                         NULL, 0, err);
    if (!rc)
        rc = post_upscale(logits, SAM_LOWRES, emb->info.new_h, emb->info.new_w, emb->info.h,
                          emb->info.w, full, err);
    if (!rc) post_threshold(full, (long long)emb->info.h * emb->info.w, 0.0f, mask);
done:
    free(logits);
    free(full);
    adp_work_destroy(&w);
    samdec_destroy(&dec);
    abank_destroy(&b);
    return rc;
}
