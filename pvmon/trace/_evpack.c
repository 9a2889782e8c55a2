/*
 * pvmon.trace._evpack: the recorder's hypercall-event packer.
 *
 * A recorded Linux boot is mostly hypercall events (52,251 of the 6.12 boot's
 * 54,871). Building each as a dict and packing the dict with ormsgpack cost
 * about 2 us of Python work per call inside the SYSCALL hook; pack_hc writes
 * the same msgpack bytes straight from the values. Its output must equal
 * pvmon.trace.writer.pack_event(pvmon.trace.format.hc_event(...)) byte for
 * byte: tests/test_evpack.py checks it on every event of a real boot and on
 * the edge values of every msgpack type.
 *
 * Encoding (the msgpack specification, "formats"; what msgpack-python with
 * use_bin_type=True and ormsgpack both write): the smallest int format
 * (positive values as fixint or uint 8/16/32/64, negative as fixint or int
 * 8/16/32/64), float 64, str as fixstr or str 8/16/32, bytes/bytearray/
 * memoryview as bin 8/16/32, list and tuple as arrays, dict as a map in
 * insertion order, None, True, False. Anything else raises TypeError, an int
 * outside [-2**63, 2**64) OverflowError; the caller then takes the dict path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct {
    char *p;
    Py_ssize_t len;
    Py_ssize_t cap;
    char stack[2048];
} Out;

static void out_init(Out *o) { o->p = o->stack; o->len = 0; o->cap = sizeof o->stack; }

static void out_free(Out *o) { if (o->p != o->stack) PyMem_Free(o->p); }

static int out_grow(Out *o, Py_ssize_t n) {
    Py_ssize_t cap = o->cap * 2;
    while (cap < o->len + n)
        cap *= 2;
    char *p;
    if (o->p == o->stack) {
        p = PyMem_Malloc(cap);
        if (p) memcpy(p, o->stack, o->len);
    } else {
        p = PyMem_Realloc(o->p, cap);
    }
    if (!p) { PyErr_NoMemory(); return -1; }
    o->p = p;
    o->cap = cap;
    return 0;
}

static inline int out_reserve(Out *o, Py_ssize_t n) {
    return o->len + n <= o->cap ? 0 : out_grow(o, n);
}

static inline int put(Out *o, const void *d, Py_ssize_t n) {
    if (out_reserve(o, n)) return -1;
    memcpy(o->p + o->len, d, n);
    o->len += n;
    return 0;
}

/* A type byte then an n-byte big-endian value. */
static inline int put_be(Out *o, unsigned char tag, uint64_t v, int n) {
    if (out_reserve(o, 1 + n)) return -1;
    unsigned char *q = (unsigned char *)o->p + o->len;
    q[0] = tag;
    for (int i = n; i >= 1; i--) { q[i] = (unsigned char)v; v >>= 8; }
    o->len += 1 + n;
    return 0;
}

static int put_uint(Out *o, uint64_t v) {
    if (v < 0x80) { unsigned char c = (unsigned char)v; return put(o, &c, 1); }
    if (v <= 0xFF) return put_be(o, 0xcc, v, 1);
    if (v <= 0xFFFF) return put_be(o, 0xcd, v, 2);
    if (v <= 0xFFFFFFFFull) return put_be(o, 0xce, v, 4);
    return put_be(o, 0xcf, v, 8);
}

static int put_int(Out *o, long long v) {
    if (v >= 0) return put_uint(o, (uint64_t)v);
    if (v >= -32) { unsigned char c = (unsigned char)(int8_t)v; return put(o, &c, 1); }
    if (v >= -128) return put_be(o, 0xd0, (uint64_t)v, 1);
    if (v >= -32768) return put_be(o, 0xd1, (uint64_t)v, 2);
    if (v >= -2147483648LL) return put_be(o, 0xd2, (uint64_t)v, 4);
    return put_be(o, 0xd3, (uint64_t)v, 8);
}

/* A str/bin/array/map header: fix form (when fix_max > 0 and n < fix_max),
 * then the 8- (if tag8), 16- and 32-bit forms. */
static int put_len(Out *o, Py_ssize_t n, unsigned char fix, Py_ssize_t fix_max,
                   int tag8, unsigned char tag16) {
    if (fix_max && n < fix_max) { unsigned char c = fix | (unsigned char)n; return put(o, &c, 1); }
    if (tag8 >= 0 && n <= 0xFF) return put_be(o, (unsigned char)tag8, (uint64_t)n, 1);
    if (n <= 0xFFFF) return put_be(o, tag16, (uint64_t)n, 2);
    if ((uint64_t)n <= 0xFFFFFFFFull) return put_be(o, tag16 + 1, (uint64_t)n, 4);
    PyErr_SetString(PyExc_ValueError, "object too large for msgpack");
    return -1;
}

static int put_str(Out *o, PyObject *s) {
    Py_ssize_t n;
    const char *u;
    if (PyUnicode_IS_COMPACT_ASCII(s)) {        /* every name an event holds */
        n = PyUnicode_GET_LENGTH(s);
        u = (const char *)PyUnicode_1BYTE_DATA(s);
    } else if (!(u = PyUnicode_AsUTF8AndSize(s, &n))) {
        return -1;
    }
    if (put_len(o, n, 0xa0, 32, 0xd9, 0xda)) return -1;
    return put(o, u, n);
}

static int put_bin(Out *o, const void *d, Py_ssize_t n) {
    if (put_len(o, n, 0, 0, 0xc4, 0xc5)) return -1;
    return put(o, d, n);
}

static int pack(Out *o, PyObject *x, int depth);

static int put_items(Out *o, PyObject **items, Py_ssize_t n, int depth) {
    if (put_len(o, n, 0x90, 16, -1, 0xdc)) return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (pack(o, items[i], depth)) return -1;
    return 0;
}

static int pack(Out *o, PyObject *x, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "event nested too deeply");
        return -1;
    }
    if (x == Py_None) { unsigned char c = 0xc0; return put(o, &c, 1); }
    if (x == Py_True) { unsigned char c = 0xc3; return put(o, &c, 1); }
    if (x == Py_False) { unsigned char c = 0xc2; return put(o, &c, 1); }
    if (PyLong_Check(x)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (!overflow) return put_int(o, v);
        /* Above 2**63 - 1: kernel addresses, PTEs with NX set. */
        if (overflow > 0 && _PyLong_NumBits(x) <= 64)
            return put_uint(o, PyLong_AsUnsignedLongLongMask(x));
        PyErr_SetString(PyExc_OverflowError, "int out of msgpack's range");
        return -1;
    }
    if (PyUnicode_Check(x)) return put_str(o, x);
    if (PyBytes_Check(x)) return put_bin(o, PyBytes_AS_STRING(x), PyBytes_GET_SIZE(x));
    if (PyTuple_Check(x))
        return put_items(o, &PyTuple_GET_ITEM(x, 0), PyTuple_GET_SIZE(x), depth + 1);
    if (PyList_Check(x)) {
        /* Packing an item never runs Python code, so the list cannot change under us. */
        return put_items(o, PySequence_Fast_ITEMS(x), PyList_GET_SIZE(x), depth + 1);
    }
    if (PyDict_Check(x)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        if (put_len(o, PyDict_GET_SIZE(x), 0x80, 16, -1, 0xde)) return -1;
        while (PyDict_Next(x, &pos, &k, &v))
            if (pack(o, k, depth + 1) || pack(o, v, depth + 1)) return -1;
        return 0;
    }
    if (PyByteArray_Check(x))
        return put_bin(o, PyByteArray_AS_STRING(x), PyByteArray_GET_SIZE(x));
    if (PyFloat_Check(x)) {
        double d = PyFloat_AS_DOUBLE(x);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return put_be(o, 0xcb, bits, 8);
    }
    if (PyMemoryView_Check(x)) {
        Py_buffer view;
        if (PyObject_GetBuffer(x, &view, PyBUF_CONTIG_RO)) return -1;
        int r = put_bin(o, view.buf, view.len);
        PyBuffer_Release(&view);
        return r;
    }
    PyErr_Format(PyExc_TypeError, "cannot pack %.100s", Py_TYPE(x)->tp_name);
    return -1;
}

/* Append o's bytes to the bytearray; returns its new length or -1. */
static Py_ssize_t flush_to(PyObject *buf, Out *o) {
    Py_ssize_t n0 = PyByteArray_GET_SIZE(buf);
    if (PyByteArray_Resize(buf, n0 + o->len)) return -1;
    memcpy(PyByteArray_AS_STRING(buf) + n0, o->p, o->len);
    return n0 + o->len;
}

/* The keys of a hypercall event after "k": "hc", in the order they are
 * written (pvmon.trace.format.HC_KEYS), each as its msgpack fixstr. */
static const char *const HC_KEYS[] = {
    "\xa3" "abi", "\xa2" "nr", "\xa4" "name", "\xa4" "args", "\xa2" "op", "\xa3" "ret",
    "\xa3" "rip", "\xa3" "via", "\xa2" "rd", "\xa2" "wr", "\xa2" "ev", "\xa3" "seq",
    "\xa1" "t", "\xa3" "cpu",
};
#define HC_NARGS ((Py_ssize_t)(sizeof HC_KEYS / sizeof HC_KEYS[0]))

PyDoc_STRVAR(pack_hc_doc,
"pack_hc(buf, abi, nr, name, args, op, ret, rip, via, rd, wr, ev, seq, t, cpu) -> int\n\n"
"Append the msgpack of the hypercall event pvmon.trace.format.hc_event(abi, ...,\n"
"cpu) to the bytearray buf; return buf's new length in bytes. Raises TypeError\n"
"for a value msgpack cannot hold, OverflowError for an int outside 64 bits,\n"
"ValueError for one nested deeper than 64; buf is then unchanged.");

static PyObject *pack_hc(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != HC_NARGS + 1) {
        PyErr_Format(PyExc_TypeError, "pack_hc takes %zd arguments (%zd given)",
                     HC_NARGS + 1, nargs);
        return NULL;
    }
    PyObject *buf = args[0];
    if (!PyByteArray_Check(buf)) {
        PyErr_SetString(PyExc_TypeError, "pack_hc: buf must be a bytearray");
        return NULL;
    }
    Out o;
    out_init(&o);
    /* fixmap of 15: "k": "hc", then the 14 keys above. */
    static const char head[] = "\x8f\xa1k\xa2hc";
    if (put(&o, head, sizeof head - 1)) goto fail;
    for (Py_ssize_t i = 0; i < HC_NARGS; i++) {
        const char *key = HC_KEYS[i];
        if (put(&o, key, 1 + (key[0] & 0x1f)) || pack(&o, args[i + 1], 1))
            goto fail;
    }
    Py_ssize_t n = flush_to(buf, &o);
    out_free(&o);
    if (n < 0) return NULL;
    return PyLong_FromSsize_t(n);
fail:
    out_free(&o);
    return NULL;
}

PyDoc_STRVAR(packb_doc,
"packb(obj) -> bytes\n\n"
"The msgpack of obj, with pack_hc's encoding and errors.");

static PyObject *packb(PyObject *self, PyObject *obj) {
    Out o;
    out_init(&o);
    if (pack(&o, obj, 0)) { out_free(&o); return NULL; }
    PyObject *r = PyBytes_FromStringAndSize(o.p, o.len);
    out_free(&o);
    return r;
}

static PyMethodDef methods[] = {
    {"pack_hc", (PyCFunction)(void (*)(void))pack_hc, METH_FASTCALL, pack_hc_doc},
    {"packb", packb, METH_O, packb_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pvmon.trace._evpack",
    "The recorder's hypercall-event packer (msgpack, compiled).", -1, methods,
};

PyMODINIT_FUNC PyInit__evpack(void) { return PyModule_Create(&module); }
