/* BLAKE3's NEON kernels (third_party/blake3/blake3_neon.c): AArch64 has NEON always, and
 * blake3_impl.h turns them on there. Empty elsewhere. */
#if defined(__aarch64__)
#include "blake3_neon.c"
#else
typedef int blake3_neon_unused; /* ISO C wants at least one declaration */
#endif
