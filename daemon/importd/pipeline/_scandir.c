/* One directory read for the reconcile walk: readdir plus lstat of every entry, without the GIL.
 *
 * Why this exists: a restart or a sweep must compare 100,000 files with the catalog in about the
 * time `find -printf` takes to list them. os.scandir builds a DirEntry and an os.stat_result per
 * file and holds the GIL for most of it; here the syscalls run with the GIL released and only the
 * few objects the comparison needs are built (the name as raw bytes, and the catalog's signature
 * tuple). No library on PyPI walks with lstat and returns undecoded names with (size, mtime_ns,
 * inode, dev); the pure-Python walk in reconcile.py stays as the fallback and the reference in tests.
 *
 * scan_dir(path: bytes, prefix: bytes = b"", unseen: dict | None = None)
 *     -> (files, dirs, links, errors, unchanged)
 *   files:  [(name, (size, mtime_ns, inode, dev), ctime_ns)]  inode and dev as signed 64-bit,
 *           as the catalog stores them. With `unseen` ({relpath: (relpath, size, mtime_ns,
 *           inode, dev)}, the catalog's rows),
 *           every file's prefix + name is popped from it, and only the files whose signature
 *           differs (or that it did not hold) are listed; `unchanged` counts the others. On a
 *           restart that is nearly every file, and no object is built for them.
 *   dirs:   [(name, dev, inode)]                              unsigned, for loop detection
 *   links:  [name]
 *   errors: [(name, errno)]                                   lstat failed (ENOENT is dropped:
 *                                                             the entry vanished after readdir)
 * Other kinds (fifos, sockets, devices) are skipped. Opening or reading the directory itself
 * raises OSError with the path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum kind { K_FILE, K_DIR, K_LINK, K_ERROR, K_SKIP };

typedef struct {
    size_t name_off;
    size_t name_len;
    enum kind kind;
    int err;
    struct stat st;
} entry_t;

typedef struct {
    entry_t *entries;
    size_t count, cap;
    char *names;
    size_t names_len, names_cap;
} listing_t;

static void listing_free(listing_t *l) {
    free(l->entries);
    free(l->names);
}

static int listing_push(listing_t *l, const char *name, size_t len, entry_t **out) {
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        entry_t *grown = realloc(l->entries, cap * sizeof(entry_t));
        if (!grown) return -1;
        l->entries = grown;
        l->cap = cap;
    }
    if (l->names_len + len > l->names_cap) {
        size_t cap = l->names_cap ? l->names_cap * 2 : 16384;
        while (cap < l->names_len + len) cap *= 2;
        char *grown = realloc(l->names, cap);
        if (!grown) return -1;
        l->names = grown;
        l->names_cap = cap;
    }
    memcpy(l->names + l->names_len, name, len);
    entry_t *e = &l->entries[l->count++];
    memset(e, 0, sizeof(*e));
    e->name_off = l->names_len;
    e->name_len = len;
    l->names_len += len;
    *out = e;
    return 0;
}

/* Runs without the GIL. Returns 0, or an errno for the directory itself. */
static int read_listing(const char *path, listing_t *l) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int err = errno;
        close(fd);
        return err;
    }
    for (;;) {
        errno = 0;
        struct dirent *d = readdir(dir);
        if (!d) {
            int err = errno;
            closedir(dir);
            return err;
        }
        const char *name = d->d_name;
        if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
        entry_t *e;
        if (listing_push(l, name, strlen(name), &e) < 0) {
            closedir(dir);
            return ENOMEM;
        }
        unsigned char type = d->d_type;
        if (type == DT_LNK) {
            e->kind = K_LINK;
            continue;
        }
        if (type != DT_UNKNOWN && type != DT_REG && type != DT_DIR) {
            e->kind = K_SKIP;
            continue;
        }
        if (fstatat(fd, name, &e->st, AT_SYMLINK_NOFOLLOW) < 0) {
            e->err = errno;
            e->kind = e->err == ENOENT ? K_SKIP : K_ERROR;
            continue;
        }
        if (S_ISREG(e->st.st_mode))
            e->kind = K_FILE;
        else if (S_ISDIR(e->st.st_mode))
            e->kind = K_DIR;
        else if (S_ISLNK(e->st.st_mode))
            e->kind = K_LINK;
        else
            e->kind = K_SKIP;
    }
}

static PyObject *signed64(unsigned long long value) {
    return PyLong_FromLongLong((long long)(int64_t)(uint64_t)value);
}

static PyObject *ns(const struct timespec *ts) {
    return PyLong_FromLongLong((long long)ts->tv_sec * 1000000000LL + (long long)ts->tv_nsec);
}

static int append_new(PyObject *list, PyObject *item) {
    if (!item) return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* 1 when `known` (the catalog's row: relpath, size, mtime_ns, inode, dev) matches the entry's
 * stat, 0 when it differs, -1 on error. */
static int same_signature(PyObject *known, const struct stat *st) {
    if (!PyTuple_Check(known) || PyTuple_GET_SIZE(known) != 5) return 0;
    long long want[4] = {(long long)st->st_size,
                         (long long)st->st_mtim.tv_sec * 1000000000LL + (long long)st->st_mtim.tv_nsec,
                         (long long)(int64_t)(uint64_t)st->st_ino, (long long)(int64_t)(uint64_t)st->st_dev};
    for (int i = 0; i < 4; i++) {
        PyObject *item = PyTuple_GET_ITEM(known, i + 1);
        if (!PyLong_Check(item)) return 0;
        int overflow = 0;
        long long have = PyLong_AsLongLongAndOverflow(item, &overflow);
        if (have == -1 && PyErr_Occurred()) return -1;
        if (overflow || have != want[i]) return 0;
    }
    return 1;
}

/* Pops prefix + name from `unseen`. 1: unchanged, 0: changed or unknown, -1: error. */
static int compare_and_pop(PyObject *unseen, PyObject *prefix, const char *name, size_t len,
                           const struct stat *st) {
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix);
    PyObject *relpath = PyBytes_FromStringAndSize(NULL, plen + (Py_ssize_t)len);
    if (!relpath) return -1;
    memcpy(PyBytes_AS_STRING(relpath), PyBytes_AS_STRING(prefix), (size_t)plen);
    memcpy(PyBytes_AS_STRING(relpath) + plen, name, len);
    PyObject *known = PyDict_GetItemWithError(unseen, relpath); /* borrowed */
    int rc = 0;
    if (known) {
        Py_INCREF(known);
        rc = same_signature(known, st);
        Py_DECREF(known);
        if (rc >= 0 && PyDict_DelItem(unseen, relpath) < 0) rc = -1;
    } else if (PyErr_Occurred()) {
        rc = -1;
    }
    Py_DECREF(relpath);
    return rc;
}

static PyObject *build(const listing_t *l, PyObject *prefix, PyObject *unseen) {
    PyObject *files = PyList_New(0), *dirs = PyList_New(0), *links = PyList_New(0), *errors = PyList_New(0);
    long long unchanged = 0;
    if (!files || !dirs || !links || !errors) goto fail;
    for (size_t i = 0; i < l->count; i++) {
        const entry_t *e = &l->entries[i];
        if (e->kind == K_SKIP) continue;
        if (e->kind == K_FILE && unseen) {
            int same = compare_and_pop(unseen, prefix, l->names + e->name_off, e->name_len, &e->st);
            if (same < 0) goto fail;
            if (same) {
                unchanged++;
                continue;
            }
        }
        PyObject *name = PyBytes_FromStringAndSize(l->names + e->name_off, (Py_ssize_t)e->name_len);
        if (!name) goto fail;
        PyObject *item = NULL;
        switch (e->kind) {
            case K_FILE: {
                PyObject *sig = Py_BuildValue("(NNNN)", PyLong_FromLongLong((long long)e->st.st_size),
                                              ns(&e->st.st_mtim), signed64(e->st.st_ino),
                                              signed64(e->st.st_dev));
                if (!sig) break;
                item = Py_BuildValue("(ONN)", name, sig, ns(&e->st.st_ctim));
                if (append_new(files, item) < 0) item = NULL;
                break;
            }
            case K_DIR:
                item = Py_BuildValue("(OKK)", name, (unsigned long long)e->st.st_dev,
                                     (unsigned long long)e->st.st_ino);
                if (append_new(dirs, item) < 0) item = NULL;
                break;
            case K_LINK:
                item = name;
                Py_INCREF(item);
                if (append_new(links, item) < 0) item = NULL;
                break;
            case K_ERROR:
                item = Py_BuildValue("(Oi)", name, e->err);
                if (append_new(errors, item) < 0) item = NULL;
                break;
            default:
                item = Py_None;
        }
        Py_DECREF(name);
        if (!item) goto fail;
    }
    return Py_BuildValue("(NNNNL)", files, dirs, links, errors, unchanged);
fail:
    Py_XDECREF(files);
    Py_XDECREF(dirs);
    Py_XDECREF(links);
    Py_XDECREF(errors);
    return NULL;
}

static PyObject *scan_dir(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"path", "prefix", "unseen", NULL};
    PyObject *path_obj, *prefix = NULL, *unseen = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!|O!O:scan_dir", keywords, &PyBytes_Type, &path_obj,
                                     &PyBytes_Type, &prefix, &unseen))
        return NULL;
    if (unseen == Py_None) {
        unseen = NULL;
    } else if (!PyDict_CheckExact(unseen)) {
        PyErr_SetString(PyExc_TypeError, "scan_dir: unseen must be a dict or None");
        return NULL;
    }
    if (unseen && !prefix) {
        PyErr_SetString(PyExc_TypeError, "scan_dir: unseen needs the prefix");
        return NULL;
    }
    const char *path = PyBytes_AS_STRING(path_obj);
    if ((size_t)PyBytes_GET_SIZE(path_obj) != strlen(path)) {
        PyErr_SetString(PyExc_ValueError, "scan_dir: embedded null byte");
        return NULL;
    }
    listing_t listing = {0};
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = read_listing(path, &listing);
    Py_END_ALLOW_THREADS
    if (err) {
        listing_free(&listing);
        errno = err;
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_obj);
    }
    PyObject *out = build(&listing, prefix, unseen);
    listing_free(&listing);
    return out;
}

static PyMethodDef methods[] = {
    {"scan_dir", (PyCFunction)(void (*)(void))scan_dir, METH_VARARGS | METH_KEYWORDS,
     "scan_dir(path, prefix=b'', unseen=None) -> (files, dirs, links, errors, unchanged)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "importd.pipeline._scandir", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scandir(void) { return PyModule_Create(&module); }
