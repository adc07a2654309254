/* A BLAKE3 digest as the lowercase hex the catalog stores: shared by _smallhash.c (small
 * files) and _blake3tree.c (big files). */
#ifndef IMPORTD_BLAKE3_HEX_H
#define IMPORTD_BLAKE3_HEX_H

#include <stdint.h>

#include "blake3.h"

static inline void blake3_hex(const uint8_t digest[BLAKE3_OUT_LEN], char out[2 * BLAKE3_OUT_LEN]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < BLAKE3_OUT_LEN; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 15];
    }
}

#endif
