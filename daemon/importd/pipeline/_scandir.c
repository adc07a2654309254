/* One directory read for the reconcile walk: readdir plus lstat of every entry, without the GIL.
 *
 * Why this exists: a restart or a sweep must compare 100,000 files with the catalog in about the
 * time `find -printf` takes to list them. os.scandir builds a DirEntry and an os.stat_result per
 * file and holds the GIL for most of it; here the syscalls run with the GIL released and the files
 * stay in a C buffer until they are compared with the catalog, which builds objects only for what
 * changed. No library on PyPI walks with lstat and returns undecoded names with (size, mtime_ns,
 * inode, dev); the pure-Python reader in reconcile.py stays as the fallback and the reference in
 * tests.
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

#include "blake3.h"
#include "blake3_hex.h"

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
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "importd.pipeline._scandir.DirFiles",
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

/* ---- read_small: the files of a cold import, read without the GIL ------------------------- */

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
    void *aligned = NULL;
    if ((unsigned long long)largest >= SIZE_MAX - 8192 ||
        posix_memalign(&aligned, 4096, ((size_t)largest + 1 + 4095) / 4096 * 4096) != 0) {
        PyErr_NoMemory();
        goto done;
    }
    buf = aligned;
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
    {"read_dirs", read_dirs, METH_O,
     "read_dirs(paths) -> [(DirFiles, dirs, links, errors) | OSError]: lstat of every entry."},
    {"read_small", read_small, METH_VARARGS,
     "read_small(root, files) -> [bytes | 1 | 2 | (stage, errno)]: small files read whole."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "importd.pipeline._scandir", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scandir(void) {
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
