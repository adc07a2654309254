/* A read buffer that starts on a page boundary: shared by _smallhash.c and _blake3tree.c.
 *
 * Why: the copy out of the page cache costs several times more on AMD Zen when the destination
 * starts a few bytes past a page boundary (where malloc puts a block), the single biggest cost of
 * a streamed read (see hasher.py). Free it with free(). */
#ifndef IMPORTD_PAGE_BUFFER_H
#define IMPORTD_PAGE_BUFFER_H

#include <stdint.h>
#include <stdlib.h>

#define IMPORTD_PAGE 4096

/* At least `size` bytes, page-aligned and rounded up to whole pages; NULL when out of memory (or
 * when `size` is too big to round up). */
static inline void *page_buffer(size_t size) {
    void *buf = NULL;
    if (size > SIZE_MAX - IMPORTD_PAGE) return NULL;
    size_t whole = (size + IMPORTD_PAGE - 1) / IMPORTD_PAGE * IMPORTD_PAGE;
    return posix_memalign(&buf, IMPORTD_PAGE, whole ? whole : IMPORTD_PAGE) == 0 ? buf : NULL;
}

#endif
