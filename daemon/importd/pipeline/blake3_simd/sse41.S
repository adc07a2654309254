/* BLAKE3's sse41 kernels: the official assembly for x86-64 on Unix (third_party/blake3), which
 * blake3_dispatch.c picks at run time after checking the CPU. The same kernels compiled from C
 * intrinsics hashed 35-45 % slower (GCC 12). Empty on other platforms, where the dispatcher does
 * not refer to them. */
#if defined(__x86_64__) && !defined(_WIN32)
#include "blake3_sse41_x86-64_unix.S"
#else
.section .note.GNU-stack, "", %progbits
#endif
