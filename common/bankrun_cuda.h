/* bankrun_cuda.h — the GPU backend of bankrun (bankrun.c's seam; not used elsewhere).
 * bankrun.c keeps the domain choice, the argument checks and the CPU path; when a bankrun_t
 * runs on CUDA (bankrun_use_cuda) it hands the decoder work of one image here:
 *
 *   bankrun_cuda_t *g = bankrun_cuda_new(sam, 0, early_c, &err);   // decoder + head uploaded
 *   bankrun_cuda_adapter(g, a, reload, emb, emb_dev, pts, n, logits, &iou, &err);
 *   bankrun_cuda_predict(g, emb, emb_dev, &prompt, &res, &err);
 *
 * Adapter run on the device: samdec_cuda_forward with the adapter's hq token (its state
 * hq_out and the upscaled feature `up` kept on the device) → adapter_cuda_head_fwd on up,
 * the embedding and the early feature → logits [256, 256] and the IoU of mask 0 downloaded
 * (one wait per image); the caller's host postprocessing follows, as on the CPU. The
 * adapter's parameters are uploaded only when `reload` is set (the caller tracks which
 * bank version and domain is on the device); one device copy, whatever the bank size.
 * bankrun_cuda_predict is sam_predict on the GPU decoder (samdec_cuda_predict).
 *
 * Embeddings: emb (host) is always given; emb_dev (may be NULL) is the same embedding
 * already on device `device` (e.g. tinyvit_cuda_emb_dev: the decoder reads it without a
 * host round trip; it must stay unchanged until the call returns). When NULL, emb->emb is
 * uploaded into g's own buffer. The early feature is always uploaded from emb->early (the
 * GPU encoders hand it to the host).
 *
 * Memory: one CUDA context on `device` whose arena holds the decoder (~71 MB), one adapter
 * (parameters, unused gradient / Adam slots and head activations: adapter_cuda_arena_bytes,
 * 162 MB for early_c 160) and the per-image buffers (~15 MB), all allocated at creation: an
 * arena of about 305 MB (128 MB reserved for the decoder), about 250 MB of it used.
 * Errors: ERR_UNSUPPORTED (build without CUDA), ERR_DEVICE, ERR_NOMEM, ERR_INVALID, ERR_RANGE
 * (more than SAMDEC_CUDA_MAX_PTS decoder points: the caller uses the CPU decoder).
 * One thread at a time.
 */
#ifndef MODA_BANKRUN_CUDA_H
#define MODA_BANKRUN_CUDA_H

#include "adapter.h"
#include "err.h"
#include "sam.h"

typedef struct bankrun_cuda bankrun_cuda_t;

/* The GPU decoder of sam's weights (borrowed, read only here) and room for one adapter of
 * early_c early channels, on CUDA device `device`. Caller owns result. */
bankrun_cuda_t *bankrun_cuda_new(const sam_t *sam, int device, int early_c, err_t *err);
void bankrun_cuda_destroy(bankrun_cuda_t **g);

/* adapter_forward (train 0) on the device for adapter a (borrowed; a->early_c must be g's;
 * its parameters are uploaded first when reload != 0): emb (host, with early), emb_dev
 * (device or NULL), pts[n] (host, 1 ≤ n ≤ SAMDEC_CUDA_MAX_PTS). Writes logits[256, 256]
 * (host) and *iou (may be NULL) = the decoder's IoU prediction of mask 0. Waits. */
int bankrun_cuda_adapter(bankrun_cuda_t *g, const adapter_t *a, int reload,
                         const sam_embedding_t *emb, const float *emb_dev, const sam_point_t *pts,
                         int n, float *logits, float *iou, err_t *err);

/* sam_predict on the GPU decoder: samdec_cuda_predict on emb_dev, or on emb->emb uploaded
 * when emb_dev is NULL. out as sam_predict fills it. Waits. */
int bankrun_cuda_predict(bankrun_cuda_t *g, const sam_embedding_t *emb, const float *emb_dev,
                         const sam_prompt_t *p, sam_result_t *out, err_t *err);

#endif
