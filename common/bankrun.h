/* bankrun.h — running a MoDA adapter bank on one image: the domain choice and the chosen
 * domain's adapter, in one place for `moda segment --bank` and the moda-infer workers.
 *
 *   bankrun_t *r = bankrun_new(sam, &err);                 // one per thread
 *   bankrun_set_bank(r, bank, version, &err);              // loads the bank's selector once
 *   float *taps = bankrun_needs_taps(bank, NULL) ? malloc(sam_taps_floats(sam) * 4) : NULL;
 *   taps ? sam_encode_taps(sam, img, &emb, taps, &err) : sam_encode(sam, img, &emb, NULL, 1, &err);
 *   bankrun_choice_t c; bankrun_choose(r, bank, NULL, taps, &c, &err);
 *   bankrun_adapter(r, bank, c.domain, &emb, NULL, NULL, 0, logits, &iou, &err);
 *   bankrun_predict(r, &emb, NULL, &prompt, &res, &err);       // no bank: SAM alone
 *
 * Domain choice (bankrun_choose), MODA.md "Selector":
 *   forced name          → that domain (how = BANKRUN_FORCED, prob -1); unknown name:
 *                          ERR_NOTFOUND listing the bank's domains.
 *   one domain           → it (BANKRUN_ONLY, prob 1); no taps needed.
 *   ≥ 2 domains          → the bank's selector on the image's taps (BANKRUN_SELECTED, prob =
 *                          the top softmax probability). A bank without selector tensors:
 *                          ERR_NOTFOUND "... has no selector ... pass --domain NAME".
 *
 * Threading: a bankrun_t belongs to one thread at a time (selector activations, decoder
 * arenas, adapter work buffers). The selector's token passes run on one thread through the
 * calling thread's kn thread override (kn.h), so concurrent workers do not disturb each other.
 * Memory: the selector object (~11 MB) is built on the first bank with ≥ 2 domains; the
 * adapter work buffers (~300 MB) on the first bankrun_adapter.
 *
 * Device: a bankrun_t runs on the CPU until bankrun_use_cuda; from then on bankrun_adapter
 * and bankrun_predict run the decoder and the adapter head on the GPU (bankrun_cuda.h:
 * samdec_cuda with the adapter's hq token and `up`, adapter_cuda_head_fwd, the logits
 * downloaded and postprocessed on the host exactly as on the CPU; the adapter's parameters
 * are uploaded again only when the bank key or the domain changes). The domain choice
 * (selector) stays on the CPU whatever the device: it reads the taps of the CPU encoder
 * (sam_encode_taps). A prompt of more than SAMDEC_CUDA_MAX_PTS decoder points runs on the
 * CPU decoder. The GPU path matches the CPU one to float rounding (fp32, no TF32), not bit
 * for bit.
 */
#ifndef MODA_BANKRUN_H
#define MODA_BANKRUN_H

#include <stdint.h>

#include "adapter_bank.h"
#include "err.h"
#include "sam.h"

typedef struct bankrun bankrun_t;

enum { BANKRUN_SELECTED = 0, BANKRUN_ONLY = 1, BANKRUN_FORCED = 2 };

typedef struct bankrun_choice {
    int domain; /* index into bank->domains */
    float prob; /* selector probability of that domain; 1 for BANKRUN_ONLY, -1 for FORCED */
    int how;    /* BANKRUN_* */
} bankrun_choice_t;

/* State for running banks with the frozen model sam (borrowed: must outlive the bankrun_t).
 * Caller owns result; NULL + err. */
bankrun_t *bankrun_new(sam_t *sam, err_t *err);
void bankrun_destroy(bankrun_t **r);

/* 1 when bankrun_choose on b (with forced, may be NULL) will need the image's selector taps:
 * b has ≥ 2 domains and no domain is forced. */
int bankrun_needs_taps(const abank_t *b, const char *forced);

/* Makes b (borrowed) the bank of the following calls. key identifies b's content (e.g. the
 * registry version): the selector is reloaded only when key or the domain count changes.
 * Errors of the selector load are kept and returned by bankrun_choose (a bank whose selector
 * is broken can still be run with a forced domain); returns 0 unless out of memory. */
int bankrun_set_bank(bankrun_t *r, const abank_t *b, uint64_t key, err_t *err);

/* 0 when the current bank can choose without a forced domain (one domain, or a usable
 * selector), else the selector load's error (ERR_NOTFOUND: no selector, ERR_FORMAT: a bad
 * one, ERR_UNSUPPORTED: the encoder has no selector support) with its message in err.
 * Lets a caller fail before the encoder pass. */
int bankrun_can_choose(const bankrun_t *r, err_t *err);

/* Domain choice for one image (rules in the header comment). taps (borrowed,
 * sam_taps_floats floats) from sam_encode_taps; may be NULL when !bankrun_needs_taps.
 * Call bankrun_set_bank(r, b, ...) first. */
int bankrun_choose(bankrun_t *r, const abank_t *b, const char *forced, const float *taps,
                   bankrun_choice_t *out, err_t *err);

/* Domain d's adapter on the frozen decoder: emb (with emb->early, i.e. encoded with the
 * early feature; emb_dev: see bankrun_use_cuda) and decoder prompt points pts[n]
 * (sam_prompt_points; NULL/0: SAM's padding point only, the promptless mode the adapters
 * are trained for). logits[256,256]
 * (caller-allocated) in SAM's low-res frame; *iou (may be NULL) the decoder's predicted IoU
 * of mask 0. */
int bankrun_adapter(bankrun_t *r, const abank_t *b, int d, const sam_embedding_t *emb,
                    const float *emb_dev, const sam_point_t *pts, int n, float *logits,
                    float *iou, err_t *err);

/* SAM alone (no bank) on emb: sam_predict, or its GPU twin samdec_cuda_predict after
 * bankrun_use_cuda (same postprocessing, out filled the same way). */
int bankrun_predict(bankrun_t *r, const sam_embedding_t *emb, const float *emb_dev,
                    const sam_prompt_t *p, sam_result_t *out, err_t *err);

/* Runs the decoder and the adapters of r on CUDA device `device` from now on (uploads the
 * decoder weights and reserves a device arena of about 305 MB now, so a missing device or
 * a full GPU fails here, not per image). Call once, before the first run.
 * emb_dev (bankrun_adapter / bankrun_predict; may be NULL): emb's embedding already on that
 * device (e.g. tinyvit_cuda_emb_dev), read instead of uploading emb->emb; ignored on the
 * CPU. Errors: ERR_UNSUPPORTED (build without CUDA), ERR_DEVICE, ERR_NOMEM, ERR_STATE
 * (already on CUDA). */
int bankrun_use_cuda(bankrun_t *r, int device, err_t *err);
/* 1 when r runs on the GPU (bankrun_use_cuda succeeded), else 0. */
int bankrun_on_cuda(const bankrun_t *r);

#endif
