/* libFuzzer entry point, also driven by replay.c when built without
 * libFuzzer (the corpus then runs as a normal test). */
#ifndef VHOSTD_FUZZ_H
#define VHOSTD_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
