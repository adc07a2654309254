/* Small files read whole and hashed, a batch at a time, without the GIL: most of a cold import.
 *
 * Why this exists: a cold import of 4 KiB files spent more time handing the GIL back and forth per
 * syscall (open, fstat, read, fstat, lstat) than reading, and in Python each file cost a blake3
 * object, a release and re-acquisition of the GIL and a hex digest, about 3 us. Here one call
 * reads and hashes a batch with the GIL released throughout, making hasher._hash_file's checks in
 * C; the hash is BLAKE3's official C implementation (vendored in third_party/blake3). Without this
 * extension every file takes hasher.hash_file, one by one.
 *
 * read_small(root: bytes, files) -> [str | 1 | 2 | (stage, errno)], one per file: see read_small.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blake3.h"
#include "blake3_hex.h"
#include "page_buffer.h"

enum small_status { S_DATA, S_VANISHED, S_UNSETTLED, S_FAILED_OPEN, S_FAILED_READ };

typedef struct {
    const char *rel;
    Py_ssize_t rel_len;
    long long size, mtime_ns, ctime_ns;
    unsigned long long ino, dev;
    uint8_t digest[BLAKE3_OUT_LEN];
    long long got;
    enum small_status status;
    int err;
} small_t;

static int same_stat(const struct stat *st, const small_t *f) {
    return (long long)st->st_size == f->size &&
           (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec == f->mtime_ns &&
           (long long)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec == f->ctime_ns &&
           (unsigned long long)st->st_ino == f->ino && (unsigned long long)st->st_dev == f->dev;
}

#ifndef O_NOATIME
#define O_NOATIME 0
#endif

/* One file, as hasher._hash_file does it: open without following a link (nor blocking on a
 * fifo), the same inode and stat as settled, every byte up to EOF, the same stat after, and the
 * name still naming that inode. `dfd` and `name`: the file's folder and its name in it (see
 * read_group), or AT_FDCWD and its whole path. */
static void read_one(int dfd, const char *name, small_t *f, char *buf, int *noatime) {
    int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int fd = -1;
    if (*noatime) {
        fd = openat(dfd, name, flags | O_NOATIME);
        if (fd < 0 && (errno == EPERM || errno == EACCES)) *noatime = 0;  /* needs ownership */
    }
    if (fd < 0) fd = openat(dfd, name, flags);
    if (fd < 0) {
        f->err = errno;
        f->status = (errno == ENOENT || errno == ELOOP) ? S_VANISHED : S_FAILED_OPEN;
        return;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        f->status = S_FAILED_READ, f->err = errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        f->status = S_VANISHED;
        goto out;
    }
    if (!same_stat(&st, f)) {
        f->status = S_UNSETTLED;
        goto out;
    }
    /* One byte more than expected (`buf` has room): a file that grew is seen without a second
     * pass. */
    f->got = 0;
    while (f->got <= f->size) {
        ssize_t n = read(fd, buf + f->got, (size_t)(f->size + 1 - f->got));
        if (n < 0) {
            if (errno == EINTR) continue;
            f->status = S_FAILED_READ, f->err = errno;
            goto out;
        }
        if (n == 0) break;
        f->got += n;
    }
    if (fstat(fd, &st) < 0) {
        f->status = S_FAILED_READ, f->err = errno;
        goto out;
    }
    if (f->got != f->size || !same_stat(&st, f)) {
        f->status = S_UNSETTLED;
        goto out;
    }
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        f->status = errno == ENOENT ? S_VANISHED : S_UNSETTLED;
        goto out;
    }
    /* Replaced by another file (a rename over it) while we read: settle the new one. */
    f->status = ((unsigned long long)st.st_ino == f->ino && (unsigned long long)st.st_dev == f->dev)
                    ? S_DATA
                    : S_UNSETTLED;
    if (f->status == S_DATA) {
        /* Hashed here, with the GIL still released, while the bytes are in cache; in Python each
         * file cost a blake3 object, a GIL release and re-acquisition and a hex digest, ~3 us. */
        blake3_hasher hasher;
        blake3_hasher_init(&hasher);
        blake3_hasher_update(&hasher, buf, (size_t)f->got);
        blake3_hasher_finalize(&hasher, f->digest, BLAKE3_OUT_LEN);
    }
out:
    close(fd);
}

/* Length of the folder part of a relative path ("a/b/c" -> 3; "c" -> 0). */
static size_t dir_len_of(const small_t *f) {
    const char *slash = memrchr(f->rel, '/', (size_t)f->rel_len);
    return slash ? (size_t)(slash - f->rel) : 0;
}

static void mark_unsettled(small_t *files, Py_ssize_t from, Py_ssize_t to) {
    for (Py_ssize_t i = from; i < to; i++) {
        if (files[i].status == S_DATA || files[i].status == S_VANISHED) files[i].status = S_UNSETTLED;
    }
}

/* files[from:to], which share one folder (dlen bytes of their relpath): the folder is opened
 * once and each file by its name in it, so an open or a stat looks up one name rather than every
 * component of the path again (the walk hands a folder's files on together). The folder's path
 * must name the same directory after the reads as before, which keeps hash_file's guarantee that
 * the path as a whole still named the file read; if it does not (a folder renamed or replaced
 * meanwhile), those files settle again. A folder that cannot be opened as one (gone, a link or a
 * file in its place, no permission) has its files opened by their whole path, as hash_file does,
 * so they fail or vanish for the same reasons. */
static void read_group(const char *root, size_t root_len, small_t *files, Py_ssize_t from, Py_ssize_t to,
                       size_t dlen, char *buf, int *noatime) {
    size_t rel_max = 0;
    for (Py_ssize_t i = from; i < to; i++)
        if ((size_t)files[i].rel_len > rel_max) rel_max = (size_t)files[i].rel_len;
    size_t dir_plen = root_len + (dlen ? 1 + dlen : 0);
    char *path = malloc(root_len + 1 + rel_max + 1);  /* root/dir, or root/relpath */
    if (!path) {
        for (Py_ssize_t i = from; i < to; i++) files[i].status = S_FAILED_OPEN, files[i].err = ENOMEM;
        return;
    }
    memcpy(path, root, root_len);
    path[root_len] = '/';
    if (dlen) memcpy(path + root_len + 1, files[from].rel, dlen);
    path[dir_plen] = 0;
    struct stat before, after;
    int dfd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd >= 0 && fstat(dfd, &before) < 0) close(dfd), dfd = -1;
    if (dfd < 0) {
        for (Py_ssize_t i = from; i < to; i++) {
            memcpy(path + root_len + 1, files[i].rel, (size_t)files[i].rel_len);
            path[root_len + 1 + (size_t)files[i].rel_len] = 0;
            read_one(AT_FDCWD, path, &files[i], buf, noatime);
        }
        free(path);
        return;
    }
    size_t skip = dlen ? dlen + 1 : 0;
    for (Py_ssize_t i = from; i < to; i++) read_one(dfd, files[i].rel + skip, &files[i], buf, noatime);
    close(dfd);
    if (lstat(path, &after) < 0 || !S_ISDIR(after.st_mode) || after.st_ino != before.st_ino ||
        after.st_dev != before.st_dev)
        mark_unsettled(files, from, to);
    free(path);
}

/* A reconcile.WalkedFile: relpath, signature (size, mtime_ns, inode, dev; inode and dev signed, as
 * the catalog stores them) and ctime_ns. `rel` is borrowed from the object, which the caller's
 * list keeps alive. */
static int parse_walked(PyObject *obj, PyObject **rel, small_t *f) {
    static PyObject *s_relpath, *s_signature, *s_ctime;
    if (!s_relpath && !(s_relpath = PyUnicode_InternFromString("relpath"))) return 0;
    if (!s_signature && !(s_signature = PyUnicode_InternFromString("signature"))) return 0;
    if (!s_ctime && !(s_ctime = PyUnicode_InternFromString("ctime_ns"))) return 0;
    PyObject *r = PyObject_GetAttr(obj, s_relpath);
    if (!r) return 0;
    Py_DECREF(r); /* still referenced by obj */
    if (!PyBytes_Check(r)) {
        PyErr_SetString(PyExc_TypeError, "read_small: relpath must be bytes");
        return 0;
    }
    *rel = r;
    PyObject *sig = PyObject_GetAttr(obj, s_signature);
    if (!sig) return 0;
    long long ino, dev;
    int ok = PyArg_ParseTuple(sig, "LLLL:read_small", &f->size, &f->mtime_ns, &ino, &dev);
    Py_DECREF(sig);
    if (!ok) return 0;
    f->ino = (unsigned long long)ino, f->dev = (unsigned long long)dev;
    PyObject *c = PyObject_GetAttr(obj, s_ctime);
    if (!c) return 0;
    f->ctime_ns = PyLong_AsLongLong(c);
    Py_DECREF(c);
    return !(f->ctime_ns == -1 && PyErr_Occurred());
}

/* read_small(root, files) -> [str | 1 | 2 | ("open" | "read", errno)]
 *   files may also be reconcile.WalkedFile objects (see parse_walked).
 *   files: [(relpath, size, mtime_ns, ctime_ns, inode, dev)], as settled (inode, dev unsigned)
 *   str: the BLAKE3 (hex) of the whole content, read while the file kept that stat; 1: vanished
 *   (or became a link or not a regular file); 2: changed, settle it again; a tuple: the stage that
 *   failed and errno.
 * Small files only (the caller's limit): each is read whole into one buffer, as big as the largest,
 * page-aligned (the copy out of the page cache is much slower a few bytes past a page boundary,
 * see hasher.py), and hashed there. */
static PyObject *read_small(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *root_obj, *items_obj;
    if (!PyArg_ParseTuple(args, "SO:read_small", &root_obj, &items_obj)) return NULL;
    PyObject *items = PySequence_Fast(items_obj, "read_small: files must be a sequence");
    if (!items) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    small_t *files = calloc((size_t)n + 1, sizeof(small_t));
    PyObject *out = NULL;
    char *buf = NULL;
    long long largest = 0; /* the buffer's size, less one */
    if (!files) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(items, i);
        PyObject *rel;
        if (PyTuple_Check(t)) {
            if (!PyArg_ParseTuple(t, "SLLLKK:read_small", &rel, &files[i].size, &files[i].mtime_ns,
                                  &files[i].ctime_ns, &files[i].ino, &files[i].dev))
                goto done;
        } else if (!parse_walked(t, &rel, &files[i])) {
            goto done;
        }
        files[i].rel = PyBytes_AS_STRING(rel);
        files[i].rel_len = PyBytes_GET_SIZE(rel);
        if ((size_t)files[i].rel_len != strlen(files[i].rel) || files[i].size < 0) {
            PyErr_SetString(PyExc_ValueError, "read_small: embedded null byte or negative size");
            goto done;
        }
        if (files[i].size > largest) largest = files[i].size;
    }
    const char *root = PyBytes_AS_STRING(root_obj);
    size_t root_len = (size_t)PyBytes_GET_SIZE(root_obj);
    if (root_len != strlen(root)) {
        PyErr_SetString(PyExc_ValueError, "read_small: embedded null byte");
        goto done;
    }
    if ((unsigned long long)largest >= SIZE_MAX - 8192 || !(buf = page_buffer((size_t)largest + 1))) {
        PyErr_NoMemory();
        goto done;
    }
    int noatime = O_NOATIME != 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n;) {
        size_t dlen = dir_len_of(&files[i]);
        Py_ssize_t j = i + 1;
        while (j < n && dir_len_of(&files[j]) == dlen && memcmp(files[j].rel, files[i].rel, dlen) == 0) j++;
        read_group(root, root_len, files, i, j, dlen, buf, &noatime);
        i = j;
    }
    Py_END_ALLOW_THREADS
    out = PyList_New(n);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        small_t *f = &files[i];
        PyObject *item;
        switch (f->status) {
        case S_DATA: {
            char hex[2 * BLAKE3_OUT_LEN];
            blake3_hex(f->digest, hex);
            item = PyUnicode_FromStringAndSize(hex, (Py_ssize_t)sizeof hex);
            break;
        }
        case S_VANISHED: item = PyLong_FromLong(1); break;
        case S_UNSETTLED: item = PyLong_FromLong(2); break;
        default: item = Py_BuildValue("(si)", f->status == S_FAILED_OPEN ? "open" : "read", f->err);
        }
        if (!item) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, item);
    }
done:
    free(buf);
    free(files);
    Py_DECREF(items);
    return out;
}


static PyMethodDef methods[] = {
    {"read_small", read_small, METH_VARARGS,
     "read_small(root, files) -> [str | 1 | 2 | (stage, errno)]: small files read whole and hashed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "importd.pipeline._smallhash", "Small files read whole and hashed, without the GIL.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__smallhash(void) { return PyModule_Create(&module); }
