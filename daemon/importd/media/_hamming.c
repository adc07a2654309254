/* The loops of the near-duplicate index (hash_index.HashIndex): probe the multi-index tables and
 * check full Hamming distances, without the GIL.
 *
 * Why C: a query is a few dozen short table runs, and at about a microsecond per numpy call a
 * vectorised query is no faster than scanning every hash; `groups()` joins every table run with
 * its neighbours, tens of thousands of short loops. hamming_kernel.py holds the same two functions
 * in numpy (a scan and a vectorised join), used when this extension is not built and as the
 * reference in tests; the arena's layout (the H_* and P_* word offsets below) is defined there and
 * built by hash_index._Arena.
 *
 * collect(arena, query, hits) -> found
 *   Every live hash within the installed plan's radius of `query` (tables and tail), written to
 *   `hits` as distance << 56 | slot, unsorted; returns how many there are, which may exceed
 *   len(hits): only the first len(hits) are written, and the caller retries with room for all.
 * collect_pairs(arena, hits, owners) -> found
 *   Every pair of live table hashes within the plan's radius, once: one slot in `owners`, the other
 *   and their distance in `hits` as above. The tail must be empty (the caller rebuilds first).
 *
 * `arena` is a C-contiguous uint64 buffer, read only; `hits` and `owners` writable uint64 buffers.
 * Every word offset in the arena is checked against its length before it is followed: a bad arena
 * raises ValueError, it never reads out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Header words (hamming_kernel.H_*). */
#define H_CHUNKS 0
#define H_BUILT 1
#define H_SLOT_DELTA 2
#define H_TAIL 3
#define H_TAIL_COUNT 4
#define H_DEAD 5
#define H_DEAD_COUNT 6
#define H_PLAN 7
#define H_VALUES 8
#define H_CHUNK 16 /* 3 words per chunk: shift, width, first word of its offsets */
#define H_CHUNK_WORDS 3
/* Plan words from arena[H_PLAN] (hamming_kernel.P_*). */
#define P_RADIUS 0
#define P_PROBES 1
#define P_SCAN 2
#define P_RADII 3 /* m radii (int64, -1: not probed), then m + 1 starts, then the masks */

/* The CPU's popcnt where it has one: 2.7 times faster joins than the generic bit count that x86-64's
 * baseline allows (measured: `groups` over 100,000 hashes, 0.27 s -> 0.10 s). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("popcnt", "default")))
#else
#define HOT
#endif

#define MAX_CHUNKS 16
#define MAX_WIDTH 16
#define DISTANCE_SHIFT 56

typedef struct {
    const uint64_t *w;
    uint64_t len;
    int chunks;
    uint64_t built, tail_count, delta, values, tail, dead, dead_count;
    uint64_t radius, probes;
    int scan;
    int shift[MAX_CHUNKS], width[MAX_CHUNKS];
    int64_t chunk_radius[MAX_CHUNKS];
    uint64_t offsets[MAX_CHUNKS];
    uint64_t starts, masks; /* word offsets of the plan's starts and masks */
} arena_t;

typedef struct {
    uint64_t *hits, *owners;
    uint64_t cap, found;
    int bad; /* a run bound or slot outside the arena: the result is void */
} out_t;

/* Whether words [at, at + count) lie inside the arena. */
static int inside(const arena_t *a, uint64_t at, uint64_t count) {
    return at <= a->len && count <= a->len - at;
}

static const char *arena_open(arena_t *a, const uint64_t *w, uint64_t len) {
    memset(a, 0, sizeof *a);
    a->w = w;
    a->len = len;
    if (len < H_CHUNK + H_CHUNK_WORDS * MAX_CHUNKS) return "shorter than its header";
    if (w[H_CHUNKS] < 1 || w[H_CHUNKS] > MAX_CHUNKS) return "bad chunk count";
    a->chunks = (int)w[H_CHUNKS];
    a->built = w[H_BUILT];
    a->delta = w[H_SLOT_DELTA];
    a->tail = w[H_TAIL];
    a->tail_count = w[H_TAIL_COUNT];
    a->dead = w[H_DEAD];
    a->dead_count = w[H_DEAD_COUNT];
    a->values = w[H_VALUES];
    if (a->built > len || a->tail_count > len) return "bad counts";
    uint64_t table = (uint64_t)a->chunks * a->built;
    if (!inside(a, a->values, table) || a->delta > len || !inside(a, a->values + a->delta, table))
        return "tables outside the arena";
    if (!inside(a, a->tail, a->tail_count)) return "tail outside the arena";
    if (!inside(a, a->dead, (a->built + a->tail_count + 63) / 64)) return "removals outside the arena";
    int total = 0;
    for (int c = 0; c < a->chunks; c++) {
        const uint64_t *head = w + H_CHUNK + H_CHUNK_WORDS * c;
        if (head[0] > 63 || head[1] < 1 || head[1] > MAX_WIDTH || head[0] + head[1] > 64)
            return "bad chunk";
        a->shift[c] = (int)head[0];
        a->width[c] = (int)head[1];
        a->offsets[c] = head[2];
        total += a->width[c];
        if (!inside(a, a->offsets[c], ((uint64_t)1 << a->width[c]) + 1)) return "offsets outside the arena";
    }
    if (total != 64) return "chunks do not cover 64 bits";
    uint64_t plan = w[H_PLAN];
    if (!inside(a, plan, P_RADII + 2 * (uint64_t)a->chunks + 1)) return "plan outside the arena";
    a->radius = w[plan + P_RADIUS];
    a->probes = w[plan + P_PROBES];
    a->scan = w[plan + P_SCAN] != 0;
    if (a->radius > 64) return "bad radius";
    a->starts = plan + P_RADII + (uint64_t)a->chunks;
    a->masks = a->starts + (uint64_t)a->chunks + 1;
    if (!inside(a, a->masks, a->probes)) return "masks outside the arena";
    for (int c = 0; c < a->chunks; c++) {
        a->chunk_radius[c] = (int64_t)w[plan + P_RADII + c];
        uint64_t lo = w[a->starts + c], hi = w[a->starts + c + 1];
        if (lo > hi || hi > a->probes) return "bad probe starts";
        for (uint64_t k = lo; k < hi; k++)
            if (w[a->masks + k] >> a->width[c]) return "mask wider than its chunk";
    }
    return NULL;
}

static inline uint64_t chunk_of(const arena_t *a, uint64_t value, int c) {
    return (value >> a->shift[c]) & (((uint64_t)1 << a->width[c]) - 1);
}

static inline int removed(const arena_t *a, uint64_t slot) {
    return a->dead_count && ((a->w[a->dead + slot / 64] >> (slot % 64)) & 1);
}

/* Whether an earlier probed chunk also holds a hash at `difference` within its radius: the pair or
 * hit was found there already (each is reported from the first chunk that finds it). */
static int seen_earlier(const arena_t *a, uint64_t difference, int chunk) {
    for (int e = 0; e < chunk; e++)
        if (a->chunk_radius[e] >= 0 && __builtin_popcountll(chunk_of(a, difference, e)) <= a->chunk_radius[e])
            return 1;
    return 0;
}

/* The slot of the table hash at word p, or -1 (out->bad set) when the arena says nonsense. */
static inline int64_t slot_at(const arena_t *a, uint64_t p, out_t *out) {
    uint64_t slot = a->w[p + a->delta];
    if (slot >= a->built + a->tail_count) {
        out->bad = 1;
        return -1;
    }
    return (int64_t)slot;
}

static void report(out_t *out, uint64_t distance, uint64_t slot, uint64_t owner) {
    if (out->found < out->cap) {
        out->hits[out->found] = distance << DISTANCE_SHIFT | slot;
        if (out->owners) out->owners[out->found] = owner;
    }
    out->found++;
}

/* The run bounds [lo, hi) of chunk value `key` of chunk c, checked to lie in that chunk's table. */
static int run_of(const arena_t *a, int c, uint64_t key, uint64_t *lo, uint64_t *hi) {
    uint64_t first = a->values + (uint64_t)c * a->built;
    *lo = a->w[a->offsets[c] + key];
    *hi = a->w[a->offsets[c] + key + 1];
    return first <= *lo && *lo <= *hi && *hi <= first + a->built;
}

HOT static void query_tables(const arena_t *a, uint64_t query, out_t *out) {
    if (a->scan) {
        for (uint64_t p = a->values; p < a->values + a->built; p++) {
            uint64_t distance = (uint64_t)__builtin_popcountll(a->w[p] ^ query);
            if (distance > a->radius) continue;
            int64_t slot = slot_at(a, p, out);
            if (slot < 0) return;
            if (!removed(a, (uint64_t)slot)) report(out, distance, (uint64_t)slot, 0);
        }
        return;
    }
    for (int c = 0; c < a->chunks; c++) {
        uint64_t own = chunk_of(a, query, c);
        for (uint64_t k = a->w[a->starts + c]; k < a->w[a->starts + c + 1]; k++) {
            uint64_t lo, hi;
            if (!run_of(a, c, own ^ a->w[a->masks + k], &lo, &hi)) {
                out->bad = 1;
                return;
            }
            for (uint64_t p = lo; p < hi; p++) {
                uint64_t difference = a->w[p] ^ query;
                uint64_t distance = (uint64_t)__builtin_popcountll(difference);
                if (distance > a->radius || seen_earlier(a, difference, c)) continue;
                int64_t slot = slot_at(a, p, out);
                if (slot < 0) return;
                if (!removed(a, (uint64_t)slot)) report(out, distance, (uint64_t)slot, 0);
            }
        }
    }
}

HOT static void query_tail(const arena_t *a, uint64_t query, out_t *out) {
    for (uint64_t j = 0; j < a->tail_count; j++) {
        uint64_t distance = (uint64_t)__builtin_popcountll(a->w[a->tail + j] ^ query);
        if (distance <= a->radius && !removed(a, a->built + j)) report(out, distance, a->built + j, 0);
    }
}

/* Pairs within the radius between table runs [lo, hi) and [other_lo, other_hi) of chunk c (the same
 * run when lo == other_lo: then each pair once), unless an earlier chunk's join has them. */
HOT static void join_runs(const arena_t *a, uint64_t lo, uint64_t hi, uint64_t other_lo, uint64_t other_hi,
                          int c, out_t *out) {
    for (uint64_t i = lo; i < hi; i++) {
        uint64_t value = a->w[i];
        int64_t slot = -2;
        for (uint64_t j = other_lo == lo ? i + 1 : other_lo; j < other_hi; j++) {
            uint64_t difference = a->w[j] ^ value;
            uint64_t distance = (uint64_t)__builtin_popcountll(difference);
            if (distance > a->radius || seen_earlier(a, difference, c)) continue;
            if (slot == -2) slot = slot_at(a, i, out);
            int64_t other = slot_at(a, j, out);
            if (slot < 0 || other < 0) return;
            if (!removed(a, (uint64_t)slot) && !removed(a, (uint64_t)other))
                report(out, distance, (uint64_t)other, (uint64_t)slot);
        }
    }
}

/* Two hashes within the radius are close on some chunk c, so they sit in runs of chunk c whose chunk
 * values differ by one of its probe masks: joining those runs pairwise compares each such pair once,
 * run against run, instead of querying every hash. */
static void pairs(const arena_t *a, out_t *out) {
    if (a->scan) {
        join_runs(a, a->values, a->values + a->built, a->values, a->values + a->built, 0, out);
        return;
    }
    for (int c = 0; c < a->chunks && !out->bad; c++) {
        for (uint64_t key = 0; key < (uint64_t)1 << a->width[c] && !out->bad; key++) {
            uint64_t lo, hi;
            if (!run_of(a, c, key, &lo, &hi)) {
                out->bad = 1;
                return;
            }
            if (lo == hi) continue;
            for (uint64_t k = a->w[a->starts + c]; k < a->w[a->starts + c + 1]; k++) {
                uint64_t other = key ^ a->w[a->masks + k];
                if (other < key) continue; /* each pair of runs once */
                uint64_t other_lo, other_hi;
                if (!run_of(a, c, other, &other_lo, &other_hi)) {
                    out->bad = 1;
                    return;
                }
                join_runs(a, lo, hi, other_lo, other_hi, c, out);
            }
        }
    }
}

/* A uint64 view of a buffer, or NULL with ValueError set. */
static uint64_t *words_of(Py_buffer *view, const char *what, uint64_t *count) {
    if (view->len % 8 != 0 || ((uintptr_t)view->buf % 8) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be an aligned uint64 buffer", what);
        return NULL;
    }
    *count = (uint64_t)view->len / 8;
    return (uint64_t *)view->buf;
}

static PyObject *collect(PyObject *self, PyObject *args) {
    Py_buffer arena_view, hits_view;
    unsigned long long query;
    if (!PyArg_ParseTuple(args, "y*Kw*:collect", &arena_view, &query, &hits_view)) return NULL;
    PyObject *result = NULL;
    arena_t a;
    out_t out = {0};
    uint64_t len;
    const uint64_t *words = words_of(&arena_view, "arena", &len);
    uint64_t *hits = words ? words_of(&hits_view, "hits", &out.cap) : NULL;
    if (hits) {
        const char *problem = arena_open(&a, words, len);
        if (problem) {
            PyErr_Format(PyExc_ValueError, "bad arena: %s", problem);
        } else {
            out.hits = hits;
            Py_BEGIN_ALLOW_THREADS
            query_tables(&a, (uint64_t)query, &out);
            if (!out.bad) query_tail(&a, (uint64_t)query, &out);
            Py_END_ALLOW_THREADS
            if (out.bad)
                PyErr_SetString(PyExc_ValueError, "bad arena: a run or slot outside its table");
            else
                result = PyLong_FromUnsignedLongLong(out.found);
        }
    }
    PyBuffer_Release(&arena_view);
    PyBuffer_Release(&hits_view);
    return result;
}

static PyObject *collect_pairs(PyObject *self, PyObject *args) {
    Py_buffer arena_view, hits_view, owners_view;
    if (!PyArg_ParseTuple(args, "y*w*w*:collect_pairs", &arena_view, &hits_view, &owners_view)) return NULL;
    PyObject *result = NULL;
    arena_t a;
    out_t out = {0};
    uint64_t len, owners_cap = 0;
    const uint64_t *words = words_of(&arena_view, "arena", &len);
    uint64_t *hits = words ? words_of(&hits_view, "hits", &out.cap) : NULL;
    uint64_t *owners = hits ? words_of(&owners_view, "owners", &owners_cap) : NULL;
    if (owners) {
        const char *problem = arena_open(&a, words, len);
        if (!problem && a.tail_count) problem = "the tail is not empty (rebuild first)";
        if (problem) {
            PyErr_Format(PyExc_ValueError, "bad arena: %s", problem);
        } else {
            out.hits = hits;
            out.owners = owners;
            if (owners_cap < out.cap) out.cap = owners_cap;
            Py_BEGIN_ALLOW_THREADS
            pairs(&a, &out);
            Py_END_ALLOW_THREADS
            if (out.bad)
                PyErr_SetString(PyExc_ValueError, "bad arena: a run or slot outside its table");
            else
                result = PyLong_FromUnsignedLongLong(out.found);
        }
    }
    PyBuffer_Release(&arena_view);
    PyBuffer_Release(&hits_view);
    PyBuffer_Release(&owners_view);
    return result;
}

static PyMethodDef methods[] = {
    {"collect", collect, METH_VARARGS,
     "collect(arena, query, hits) -> found: live hashes within the plan's radius of `query`, as "
     "distance << 56 | slot, unsorted; only the first len(hits) are written."},
    {"collect_pairs", collect_pairs, METH_VARARGS,
     "collect_pairs(arena, hits, owners) -> found: every pair of live table hashes within the plan's "
     "radius, once (owner slot; distance << 56 | other slot)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hamming", "The near-duplicate index's search loops (see hamming_kernel.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hamming(void) { return PyModule_Create(&module); }
