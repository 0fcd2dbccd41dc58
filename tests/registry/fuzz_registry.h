/* fuzz_registry.h — shared between the fuzz target and its corpus-replay driver. */
#ifndef MODA_FUZZ_REGISTRY_H
#define MODA_FUZZ_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "reg.h"

#define FUZZ_BASE "f00df00df00df00df00df00df00df00df00df00df00df00df00df00df00df00d"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Writes frames in the fuzz input format; returns the length, 0 when it does not fit. */
size_t fuzz_frames_encode(const msg_part_t *frames, int n, unsigned char *out, size_t cap);
/* The handler under test (created on first use). */
reg_t *fuzz_registry(void);
/* The store's temporary folder (valid after fuzz_registry). */
const char *fuzz_dir(void);
/* 0 when the reply has a body and survives pack/unpack. */
int fuzz_check_reply(const reg_reply_t *rep);

#endif
