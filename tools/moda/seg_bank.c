/* seg_bank.c — `moda segment --bank`: segment with a domain's MoDA adapter (used by
 * cmd_segment.c; declared in cmds.h).
 *
 * Domain choice is bankrun.h's (the same function moda-infer uses): --domain NAME forces
 * one; otherwise a bank with one domain uses it, and a bank with several lets its selector
 * choose from the taps of the same single encoder pass (sam_encode_taps); a bank without a
 * selector is a clear error asking for --domain. Prompts: the given points/box, or none
 * (--prompt auto: SAM's padding point only, the promptless mode the adapters are trained
 * for).
 *
 * Device (cuda): the bankrun runs on the GPU (bankrun_use_cuda: decoder + adapter head);
 * the image is encoded by the GPU encoder (enc_cuda, the early feature downloaded for the
 * head, the embedding read on the device) unless the selector chooses: its taps come from
 * the CPU encoder (sam_encode_taps), whose embedding is then uploaded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_bank.h"
#include "bankrun.h"
#include "cmds.h"
#include "enc_cuda.h"
#include "postprocess.h"

/* The encoder pass without taps: on the GPU encoder (its device embedding in *emb_dev,
 * valid while *enc lives) or on the CPU. */
static int encode(sam_t *sam, const image_t *img, int cuda, enc_cuda_t **enc, float **x,
                  sam_embedding_t *emb, const float **emb_dev, err_t *err)
{
    if (!cuda) return sam_encode(sam, img, emb, NULL, 1, err);
    if (!(*x = malloc(sizeof(float) * 3 * SAM_IMG * SAM_IMG)))
        return err_set(err, ERR_NOMEM, "out of memory");
    if (!(*enc = enc_cuda_new(sam, 0, 1, err))) return err->code ? err->code : ERR_DEVICE;
    int rc = enc_cuda_encode(*enc, img, emb, *x, 1, err);
    if (!rc) *emb_dev = enc_cuda_emb_dev(*enc, 0);
    return rc;
}

int seg_bank_predict(sam_t *sam, const image_t *img, const sam_prompt_t *p,
                     const char *bank_path, const char *domain, int cuda, uint8_t *mask,
                     char *chosen, size_t chosen_n, float *prob, int *how, err_t *err)
{
    char hash[65];
    wts_content_hash(sam_weights(sam), hash);
    abank_t *b = abank_load(bank_path, hash, sam_early_channels(sam), err);
    if (!b) return err->code ? err->code : ERR_FORMAT;
    bankrun_t *br = bankrun_new(sam, err);
    sam_embedding_t emb = {0};
    float *taps = NULL, *logits = NULL, *full = NULL, *x = NULL;
    enc_cuda_t *enc = NULL;
    const float *emb_dev = NULL;
    int rc = br ? bankrun_set_bank(br, b, 1, err) : (err->code ? err->code : ERR_NOMEM);
    if (!rc && cuda) rc = bankrun_use_cuda(br, 0, err);
    bankrun_choice_t c = {0};
    if (!rc && bankrun_needs_taps(b, domain)) {
        /* fail before the encoder pass when the bank cannot choose (no selector) */
        rc = bankrun_can_choose(br, err);
        if (!rc && !(taps = malloc(sizeof(float) * sam_taps_floats(sam))))
            rc = err_set(err, ERR_NOMEM, "out of memory for the selector taps");
        if (!rc) rc = sam_encode_taps(sam, img, &emb, taps, err);
    } else if (!rc) {
        if (domain) rc = bankrun_choose(br, b, domain, NULL, &c, err); /* unknown name: now */
        if (!rc) rc = encode(sam, img, cuda, &enc, &x, &emb, &emb_dev, err);
    }
    if (!rc) rc = bankrun_choose(br, b, domain, taps, &c, err);
    if (rc) {
        err_wrap(err, "bank '%s'", bank_path);
        goto done;
    }
    snprintf(chosen, chosen_n, "%s", b->domains[c.domain].name);
    *prob = c.prob;
    *how = c.how;
    sam_point_t pts[SAM_MAX_POINTS + 2];
    int n = 0;
    if (p && (n = sam_prompt_points(&emb.info, p, pts, err)) < 0) {
        rc = n;
        goto done;
    }
    logits = malloc(sizeof(float) * SAM_LOWRES * SAM_LOWRES);
    full = malloc(sizeof(float) * (size_t)emb.info.h * emb.info.w);
    if (!logits || !full) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto done;
    }
    rc = bankrun_adapter(br, b, c.domain, &emb, emb_dev, p ? pts : NULL, n, logits, NULL, err);
    if (!rc)
        rc = post_upscale(logits, SAM_LOWRES, emb.info.new_h, emb.info.new_w, emb.info.h,
                          emb.info.w, full, err);
    if (!rc) post_threshold(full, (long long)emb.info.h * emb.info.w, 0.0f, mask);
done:
    free(logits);
    free(full);
    free(taps);
    free(x);
    sam_embedding_free(&emb);
    bankrun_destroy(&br); /* before the encoder whose embedding it read */
    enc_cuda_destroy(&enc);
    abank_destroy(&b);
    return rc;
}
