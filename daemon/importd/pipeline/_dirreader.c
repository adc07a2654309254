/* One directory read for the reconcile walk: readdir plus lstat of every entry, without the GIL.
 *
 * Why this exists: a restart or a sweep must compare 100,000 files with the catalog in about the
 * time `find -printf` takes to list them. os.scandir builds a DirEntry and an os.stat_result per
 * file and holds the GIL for most of it; here the syscalls run with the GIL released and the files
 * stay in a C buffer until they are compared with the catalog, which builds objects only for what
 * changed. No library on PyPI walks with lstat and returns undecoded names with (size, mtime_ns,
 * inode, dev); the pure-Python reader in reconcile.py stays as the fallback and the reference in
 * tests. Small files' contents are read and hashed by another extension, _smallhash.c.
 *
 * read_dirs(paths: list[bytes]) -> [(files: DirFiles, dirs, links, errors) | OSError], one per path
 *   dirs:   [(name, dev, inode)]   unsigned, for loop detection
 *   links:  [name]
 *   errors: [(name, errno)]        lstat failed (ENOENT is dropped: the entry vanished after readdir)
 *   Other kinds (fifos, sockets, devices) are skipped. Opening or reading the directory itself
 *   raises OSError with the path.
 * DirFiles.take(prefix: bytes, unseen: dict | None) -> (files, unchanged)
 *   files: [(name, (size, mtime_ns, inode, dev), ctime_ns)], inode and dev as signed 64-bit, as
 *   the catalog stores them. With `unseen` ({relpath: (relpath, size, mtime_ns, inode, dev)},
 *   the catalog's rows), every file's prefix + name is popped from it, and only the files whose
 *   signature differs (or that it did not hold) are listed; `unchanged` counts the others.
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
    long long size, mtime_ns, ctime_ns;
    unsigned long long ino, dev;
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
        struct stat st;
        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            e->err = errno;
            e->kind = e->err == ENOENT ? K_SKIP : K_ERROR;
            continue;
        }
        e->size = (long long)st.st_size;
        e->mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + (long long)st.st_mtim.tv_nsec;
        e->ctime_ns = (long long)st.st_ctim.tv_sec * 1000000000LL + (long long)st.st_ctim.tv_nsec;
        e->ino = (unsigned long long)st.st_ino;
        e->dev = (unsigned long long)st.st_dev;
        if (S_ISREG(st.st_mode))
            e->kind = K_FILE;
        else if (S_ISDIR(st.st_mode))
            e->kind = K_DIR;
        else if (S_ISLNK(st.st_mode))
            e->kind = K_LINK;
        else
            e->kind = K_SKIP;
    }
}

static PyObject *signed64(unsigned long long value) {
    return PyLong_FromLongLong((long long)(int64_t)(uint64_t)value);
}

static int append_new(PyObject *list, PyObject *item) {
    if (!item) return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* 1 when `known` (the catalog's row: relpath, size, mtime_ns, inode, dev) matches the entry,
 * 0 when it differs, -1 on error. */
static int same_signature(PyObject *known, const entry_t *e) {
    if (!PyTuple_Check(known) || PyTuple_GET_SIZE(known) != 5) return 0;
    long long want[4] = {e->size, e->mtime_ns, (long long)(int64_t)(uint64_t)e->ino,
                         (long long)(int64_t)(uint64_t)e->dev};
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
static int compare_and_pop(PyObject *unseen, PyObject *prefix, const char *name, const entry_t *e) {
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix);
    PyObject *relpath = PyBytes_FromStringAndSize(NULL, plen + (Py_ssize_t)e->name_len);
    if (!relpath) return -1;
    memcpy(PyBytes_AS_STRING(relpath), PyBytes_AS_STRING(prefix), (size_t)plen);
    memcpy(PyBytes_AS_STRING(relpath) + plen, name, e->name_len);
    PyObject *known = PyDict_GetItemWithError(unseen, relpath); /* borrowed */
    int rc = 0;
    if (known) {
        Py_INCREF(known);
        rc = same_signature(known, e);
        Py_DECREF(known);
        if (rc >= 0 && PyDict_DelItem(unseen, relpath) < 0) rc = -1;
    } else if (PyErr_Occurred()) {
        rc = -1;
    }
    Py_DECREF(relpath);
    return rc;
}

/* ----- DirFiles: the regular files of one read, kept in C until taken ----- */

typedef struct {
    PyObject_HEAD
    listing_t listing;
} DirFiles;

static void DirFiles_dealloc(DirFiles *self) {
    listing_free(&self->listing);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *DirFiles_take(DirFiles *self, PyObject *args) {
    PyObject *prefix, *unseen = Py_None;
    if (!PyArg_ParseTuple(args, "O!|O:take", &PyBytes_Type, &prefix, &unseen)) return NULL;
    if (unseen == Py_None) {
        unseen = NULL;
    } else if (!PyDict_CheckExact(unseen)) {
        PyErr_SetString(PyExc_TypeError, "take: unseen must be a dict or None");
        return NULL;
    }
    const listing_t *l = &self->listing;
    PyObject *files = PyList_New(0);
    if (!files) return NULL;
    long long unchanged = 0;
    for (size_t i = 0; i < l->count; i++) {
        const entry_t *e = &l->entries[i];
        if (e->kind != K_FILE) continue;
        const char *name = l->names + e->name_off;
        if (unseen) {
            int same = compare_and_pop(unseen, prefix, name, e);
            if (same < 0) goto fail;
            if (same) {
                unchanged++;
                continue;
            }
        }
        PyObject *item = Py_BuildValue("(y#(LLNN)L)", name, (Py_ssize_t)e->name_len, e->size, e->mtime_ns,
                                       signed64(e->ino), signed64(e->dev), e->ctime_ns);
        if (append_new(files, item) < 0) goto fail;
    }
    return Py_BuildValue("(NL)", files, unchanged);
fail:
    Py_DECREF(files);
    return NULL;
}

static Py_ssize_t DirFiles_len(DirFiles *self) {
    Py_ssize_t n = 0;
    for (size_t i = 0; i < self->listing.count; i++) n += self->listing.entries[i].kind == K_FILE;
    return n;
}

static PyMethodDef DirFiles_methods[] = {
    {"take", (PyCFunction)DirFiles_take, METH_VARARGS,
     "take(prefix, unseen=None) -> (files, unchanged): the files, compared with `unseen` if given."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods DirFiles_as_sequence = {.sq_length = (lenfunc)DirFiles_len};

static PyTypeObject DirFilesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "importd.pipeline._dirreader.DirFiles",
    .tp_basicsize = sizeof(DirFiles),
    .tp_dealloc = (destructor)DirFiles_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The regular files of one directory read, held in C until taken.",
    .tp_methods = DirFiles_methods,
    .tp_as_sequence = &DirFiles_as_sequence,
};

/* ----- read_dirs ----- */

static PyObject *build_read(DirFiles *files) {
    PyObject *dirs = PyList_New(0), *links = PyList_New(0), *errors = PyList_New(0);
    if (!dirs || !links || !errors) goto fail;
    const listing_t *l = &files->listing;
    for (size_t i = 0; i < l->count; i++) {
        const entry_t *e = &l->entries[i];
        const char *name = l->names + e->name_off;
        Py_ssize_t len = (Py_ssize_t)e->name_len;
        if (e->kind == K_DIR) {
            if (append_new(dirs, Py_BuildValue("(y#KK)", name, len, e->dev, e->ino)) < 0) goto fail;
        } else if (e->kind == K_LINK) {
            if (append_new(links, PyBytes_FromStringAndSize(name, len)) < 0) goto fail;
        } else if (e->kind == K_ERROR) {
            if (append_new(errors, Py_BuildValue("(y#i)", name, len, e->err)) < 0) goto fail;
        }
    }
    Py_INCREF(files);
    return Py_BuildValue("(NNNN)", (PyObject *)files, dirs, links, errors);
fail:
    Py_XDECREF(dirs);
    Py_XDECREF(links);
    Py_XDECREF(errors);
    return NULL;
}

/* Reads several directories with one release of the GIL: a walk calls it with the directories
 * it has queued, so the thread beside it (the catalog snapshot) is not slowed by a GIL hand-off
 * per directory. Each result is (DirFiles, dirs, links, errors) or the OSError for that path. */
static PyObject *read_dirs(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *paths = PySequence_Fast(arg, "read_dirs: paths must be a sequence of bytes");
    if (!paths) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(paths);
    const char **cpaths = calloc((size_t)n + 1, sizeof(char *));
    DirFiles **reads = calloc((size_t)n + 1, sizeof(DirFiles *));
    int *errs = calloc((size_t)n + 1, sizeof(int));
    PyObject *out = NULL;
    if (!cpaths || !reads || !errs) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PySequence_Fast_GET_ITEM(paths, i);
        if (!PyBytes_Check(p)) {
            PyErr_SetString(PyExc_TypeError, "read_dirs: paths must be bytes");
            goto done;
        }
        cpaths[i] = PyBytes_AS_STRING(p);
        if ((size_t)PyBytes_GET_SIZE(p) != strlen(cpaths[i])) {
            PyErr_SetString(PyExc_ValueError, "read_dirs: embedded null byte");
            goto done;
        }
        reads[i] = PyObject_New(DirFiles, &DirFilesType);
        if (!reads[i]) goto done;
        memset(&reads[i]->listing, 0, sizeof(reads[i]->listing));
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) errs[i] = read_listing(cpaths[i], &reads[i]->listing);
    Py_END_ALLOW_THREADS
    out = PyList_New(n);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item;
        if (errs[i]) {
            item = PyObject_CallFunction(PyExc_OSError, "isO", errs[i], strerror(errs[i]),
                                         PySequence_Fast_GET_ITEM(paths, i));
        } else {
            item = build_read(reads[i]);
        }
        if (!item) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, item);
    }
done:
    if (reads)
        for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(reads[i]);
    free(cpaths);
    free(reads);
    free(errs);
    Py_DECREF(paths);
    return out;
}

static PyMethodDef methods[] = {
    {"read_dirs", read_dirs, METH_O,
     "read_dirs(paths) -> [(DirFiles, dirs, links, errors) | OSError]: lstat of every entry."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "importd.pipeline._dirreader", "The reconcile walk's directory reader.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__dirreader(void) {
    if (PyType_Ready(&DirFilesType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&DirFilesType);
    if (PyModule_AddObject(m, "DirFiles", (PyObject *)&DirFilesType) < 0) {
        Py_DECREF(&DirFilesType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
