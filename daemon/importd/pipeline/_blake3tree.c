/* BLAKE3 of a big file, hashed by several threads that each read their own part.
 *
 * Why not the blake3 package with max_threads: it parallelises inside one update() call, so a
 * streamed read has to copy a chunk out of the page cache first and then wake blake3's thread
 * pool to hash it, chunk after chunk. On two cores that is three busy threads, a reader and two
 * hashers, handing buffers over some thousand times a GiB (a sched_yield or futex call each
 * time), and every byte crosses between cores' caches. Here each thread reads a piece with
 * pread() into a buffer of its own that stays in its cache, and hashes it there: the copy the
 * streamed read cannot avoid (mmap would, but see hasher.py on SIGBUS) is spread over every core
 * and nothing is handed over until a whole task is done.
 *
 * BLAKE3 is a tree: every aligned run of 2^k chunks (1 KiB each) that lies wholly inside the
 * input is a subtree whose chaining value depends on nothing else. The file is cut into tasks of
 * one such size; threads take tasks in order and keep their chaining values; the calling thread
 * then pushes them, in order, onto a BLAKE3 hasher's stack of subtrees, exactly as
 * blake3_hasher_update would have after hashing those bytes itself, and feeds the rest of the
 * file (less than a task) through update(). The digest is the same by construction, and the
 * tests compare it with the blake3 package's at the sizes where the tree's shape changes.
 *
 * The BLAKE3 code is the official C implementation, vendored unmodified in third_party/blake3;
 * this file includes blake3.c to reach its internal helpers (subtree compression, the hasher's
 * stack), as the Rust crate's hazmat module exposes them in later versions. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blake3.c"
#include "blake3_hex.h"
#include "page_buffer.h"

/* Read and hashed at a time by one thread: small enough to stay in a core's L2 cache between the
 * copy and the hash, big enough that a pread() per piece costs nothing. A power of two number of
 * chunks, so each piece is a subtree. */
#define PIECE ((uint64_t)256 << 10)
#define MAX_TASK ((uint64_t)4 << 20)
#define MAX_THREADS 64
/* The calling thread asks Python's `stop.is_set()` before its first task (so a stop already set,
 * or one that raises, is always seen, however fast the helpers take the tasks) and then before
 * every CHECK_EVERY-th of its own tasks. */
#define CHECK_EVERY 8

typedef struct {
    int fd;
    uint64_t tasks;
    uint64_t task_bytes;
    uint8_t *cvs; /* tasks * BLAKE3_OUT_LEN */
    atomic_ullong next;
    atomic_int halt; /* a read failed, the file ended early, or the caller was stopped */
    pthread_mutex_t lock;
    int error;          /* errno of the first failed read, 0 for none */
    uint64_t ended_at;  /* where the file ended early, UINT64_MAX when it did not */
} tree_job;

static void job_fail(tree_job *job, int error, uint64_t ended_at) {
    pthread_mutex_lock(&job->lock);
    if (error && !job->error) job->error = error;
    if (!error && ended_at < job->ended_at) job->ended_at = ended_at;
    pthread_mutex_unlock(&job->lock);
    atomic_store(&job->halt, 1);
}

/* pread until `len` bytes or the end of the file; *got says how many. 0 or an errno. */
static int read_at(int fd, uint8_t *buf, uint64_t len, uint64_t offset, uint64_t *got) {
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, (size_t)(len - done), (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            *got = done;
            return errno;
        }
        if (n == 0) break;
        done += (uint64_t)n;
    }
    *got = done;
    return 0;
}

/* The chaining value of the parent node whose 64-byte block (two child chaining values) is at
 * `block`, written to `out` (which may be `block`: make_output copies it first). */
static void parent_cv(const uint8_t block[BLAKE3_BLOCK_LEN], uint8_t out[BLAKE3_OUT_LEN]) {
    output_t output = parent_output(block, IV, 0);
    output_chaining_value(&output, out);
}

/* Task t's chaining value: pieces hashed as subtrees and merged as a binary counter (a task is a
 * power of two pieces, so one value remains). 0, or -1 when the job is halting. */
static int hash_task(tree_job *job, uint64_t t, uint8_t *buf) {
    uint8_t stack[BLAKE3_MAX_DEPTH * BLAKE3_OUT_LEN];
    size_t depth = 0;
    uint64_t base = t * job->task_bytes, pieces = job->task_bytes / PIECE;
    for (uint64_t i = 0; i < pieces; i++) {
        if (atomic_load_explicit(&job->halt, memory_order_relaxed)) return -1;
        uint64_t offset = base + i * PIECE, got = 0;
        int error = read_at(job->fd, buf, PIECE, offset, &got);
        if (error || got < PIECE) {
            job_fail(job, error, offset + got);
            return -1;
        }
        uint8_t pair[2 * BLAKE3_OUT_LEN];
        compress_subtree_to_parent_node(buf, PIECE, IV, offset / BLAKE3_CHUNK_LEN, 0, pair);
        parent_cv(pair, &stack[depth * BLAKE3_OUT_LEN]);
        depth++;
        for (uint64_t n = i + 1; (n & 1) == 0; n >>= 1) {
            parent_cv(&stack[(depth - 2) * BLAKE3_OUT_LEN], &stack[(depth - 2) * BLAKE3_OUT_LEN]);
            depth--;
        }
    }
    memcpy(job->cvs + t * BLAKE3_OUT_LEN, stack, BLAKE3_OUT_LEN);
    return 0;
}

static uint8_t *new_piece_buffer(void) { return page_buffer((size_t)PIECE); }

static void run_tasks(tree_job *job, uint8_t *buf) {
    for (;;) {
        if (atomic_load_explicit(&job->halt, memory_order_relaxed)) return;
        uint64_t t = atomic_fetch_add(&job->next, 1);
        if (t >= job->tasks || hash_task(job, t, buf) != 0) return;
    }
}

static void *worker(void *arg) {
    tree_job *job = (tree_job *)arg;
    uint8_t *buf = new_piece_buffer();
    if (!buf) {
        job_fail(job, ENOMEM, UINT64_MAX);
        return NULL;
    }
    run_tasks(job, buf);
    free(buf);
    return NULL;
}

/* The task size for `size` bytes over `threads` threads: at least four tasks a thread, so that
 * the last ones even out, and at most MAX_TASK. 0: too small to split (hash it all in one). */
static uint64_t task_size(uint64_t size, int threads) {
    uint64_t task = MAX_TASK;
    while (task > PIECE && size / task < 4 * (uint64_t)threads) task /= 2;
    return size / task >= 2 ? task : 0;
}

/* hash_fd(fd, size, threads, stop) -> (hexdigest | None, bytes)
 *   The BLAKE3 of the first `size` bytes of the regular file open at `fd`, read with pread (the
 *   file offset is not used or moved) by `threads` threads, the caller's among them. `stop`:
 *   None, or an object whose is_set() the calling thread asks now and then; when it answers
 *   true the hash is abandoned and (None, 0) returned. When the file ends before `size` bytes,
 *   (None, where it ended). A failed read raises OSError. The GIL is released throughout. */
static PyObject *hash_fd(PyObject *self, PyObject *args) {
    (void)self;
    int fd, threads;
    long long signed_size;
    PyObject *stop;
    if (!PyArg_ParseTuple(args, "iLiO:hash_fd", &fd, &signed_size, &threads, &stop)) return NULL;
    if (fd < 0 || signed_size < 0) {
        PyErr_SetString(PyExc_ValueError, fd < 0 ? "hash_fd: negative file descriptor" : "hash_fd: negative size");
        return NULL;
    }
    uint64_t size = (uint64_t)signed_size;
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (stop == Py_None) stop = NULL;

    tree_job job;
    memset(&job, 0, sizeof job);
    job.fd = fd;
    job.task_bytes = task_size(size, threads);
    job.tasks = job.task_bytes ? size / job.task_bytes : 0;
    job.ended_at = UINT64_MAX;
    atomic_init(&job.next, 0);
    atomic_init(&job.halt, 0);
    pthread_mutex_init(&job.lock, NULL);
    job.cvs = job.tasks ? PyMem_RawMalloc((size_t)job.tasks * BLAKE3_OUT_LEN) : NULL;
    uint8_t *buf = new_piece_buffer();
    if ((job.tasks && !job.cvs) || !buf) {
        PyMem_RawFree(job.cvs);
        free(buf);
        pthread_mutex_destroy(&job.lock);
        return PyErr_NoMemory();
    }

    int cancelled = 0;
    PyObject *stop_error = NULL; /* an exception raised by stop.is_set() */
    uint8_t digest[BLAKE3_OUT_LEN];
    uint64_t tail_from = job.tasks * job.task_bytes, reached = size;

    PyThreadState *state = PyEval_SaveThread();
    pthread_t helpers[MAX_THREADS];
    int started = 0;
    for (int i = 1; i < threads && job.tasks > 1; i++) {
        if (pthread_create(&helpers[started], NULL, worker, &job) != 0) break; /* fewer, then */
        started++;
    }
    for (int done = 0;;) {
        if (atomic_load(&job.halt)) break;
        if (stop && done++ % CHECK_EVERY == 0) {
            PyEval_RestoreThread(state);
            int is_set = -1;
            PyObject *answer = PyObject_CallMethod(stop, "is_set", NULL);
            if (answer) {
                is_set = PyObject_IsTrue(answer);
                Py_DECREF(answer);
            }
            if (is_set < 0) {
                PyObject *type, *traceback;
                PyErr_Fetch(&type, &stop_error, &traceback);
                PyErr_NormalizeException(&type, &stop_error, &traceback);
                Py_XDECREF(type);
                Py_XDECREF(traceback);
            }
            state = PyEval_SaveThread();
            if (is_set != 0) {
                cancelled = 1;
                atomic_store(&job.halt, 1);
                break;
            }
        }
        uint64_t t = atomic_fetch_add(&job.next, 1);
        if (t >= job.tasks || hash_task(&job, t, buf) != 0) break;
    }
    for (int i = 0; i < started; i++) pthread_join(helpers[i], NULL);

    if (!atomic_load(&job.halt)) {
        /* The tasks' subtrees onto a hasher's stack, as its own update() would have left them
         * (lazy merging: each push first merges what the chunks before it complete), then the
         * rest of the file through update(). */
        blake3_hasher hasher;
        blake3_hasher_init(&hasher);
        uint64_t task_chunks = job.task_bytes / BLAKE3_CHUNK_LEN;
        for (uint64_t t = 0; t < job.tasks; t++)
            hasher_push_cv(&hasher, job.cvs + t * BLAKE3_OUT_LEN, t * task_chunks);
        hasher.chunk.chunk_counter = job.tasks * task_chunks;
        for (uint64_t offset = tail_from; offset < size;) {
            uint64_t want = size - offset < PIECE ? size - offset : PIECE, got = 0;
            int error = read_at(fd, buf, want, offset, &got);
            blake3_hasher_update(&hasher, buf, (size_t)got);
            offset += got;
            if (error || got < want) {
                job_fail(&job, error, offset);
                break;
            }
        }
        if (!atomic_load(&job.halt)) blake3_hasher_finalize(&hasher, digest, BLAKE3_OUT_LEN);
    }
    PyEval_RestoreThread(state);

    PyMem_RawFree(job.cvs);
    free(buf);
    pthread_mutex_destroy(&job.lock);
    if (stop_error) {
        PyErr_SetObject((PyObject *)Py_TYPE(stop_error), stop_error);
        Py_DECREF(stop_error);
        return NULL;
    }
    if (job.error) {
        errno = job.error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (cancelled) return Py_BuildValue("(OK)", Py_None, 0ULL);
    if (job.ended_at != UINT64_MAX) reached = job.ended_at;
    if (reached < size) return Py_BuildValue("(OK)", Py_None, (unsigned long long)reached);
    char hex[2 * BLAKE3_OUT_LEN];
    blake3_hex(digest, hex);
    return Py_BuildValue("(s#K)", hex, (Py_ssize_t)sizeof hex, (unsigned long long)size);
}

static PyMethodDef methods[] = {
    {"hash_fd", hash_fd, METH_VARARGS,
     "hash_fd(fd, size, threads, stop) -> (hexdigest | None, bytes): BLAKE3 of a file's first "
     "`size` bytes, read and hashed by `threads` threads."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_blake3tree", "BLAKE3 of big files, read and hashed by several threads.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__blake3tree(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddStringConstant(m, "BLAKE3_VERSION", BLAKE3_VERSION_STRING) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
