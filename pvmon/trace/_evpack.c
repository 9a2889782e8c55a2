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
 *
 * OpenFrame is a trace writer's open frame (pvmon.trace.writer): the events
 * packed so far and the checks every appended event must pass, so that the
 * recorder's call per hypercall runs no Python code unless the frame is full.
 * Its ev() packs any small event from its keys and values the same way, for the
 * HVM platform's frequent fixed-shape events (a port read: 100,114 of a Debian
 * 6.12 PVH boot's 161,035 events) without building a dict.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
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

/* Pack the hypercall event of args[0..HC_NARGS) into o. */
static int pack_hc_into(Out *o, PyObject *const *args) {
    /* fixmap of 15: "k": "hc", then the 14 keys above. */
    static const char head[] = "\x8f\xa1k\xa2hc";
    if (put(o, head, sizeof head - 1)) return -1;
    for (Py_ssize_t i = 0; i < HC_NARGS; i++) {
        const char *key = HC_KEYS[i];
        if (put(o, key, 1 + (key[0] & 0x1f)) || pack(o, args[i], 1))
            return -1;
    }
    return 0;
}

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
    if (pack_hc_into(&o, args + 1)) {
        out_free(&o);
        return NULL;
    }
    Py_ssize_t n = flush_to(buf, &o);
    out_free(&o);
    if (n < 0) return NULL;
    return PyLong_FromSsize_t(n);
}

/* ------------------------------------------------------------------ OpenFrame */

typedef struct {
    PyObject_HEAD
    PyObject *buf;              /* bytearray: the events packed back to back */
    Py_ssize_t count;           /* events in buf */
    long long next_seq;         /* the seq the next event must carry */
    long long first_t, last_t;  /* virtual time (ns) of buf's first event, of the last accepted */
    int has_last;               /* an event was accepted: last_t holds */
    int closed;
    Py_ssize_t frame_events, frame_bytes, max_event;
    PyObject *on_full;          /* called with no arguments when the frame is full */
    PyObject *fallback;         /* hc(): called with hc's arguments when they take the long way */
} OpenFrame;

/* seq and t as the checks want them: exact ints, seq == next_seq, t in i64
 * and not before the last accepted event. 1 if they pass, 0 if not. */
static int frame_accepts(OpenFrame *f, PyObject *seq, PyObject *t, long long *tv) {
    if (f->closed || !PyLong_CheckExact(seq) || !PyLong_CheckExact(t)) return 0;
    int overflow;
    long long sv = PyLong_AsLongLongAndOverflow(seq, &overflow);
    if (overflow || (sv == -1 && PyErr_Occurred()) || sv != f->next_seq) { PyErr_Clear(); return 0; }
    *tv = PyLong_AsLongLongAndOverflow(t, &overflow);
    if (overflow || (*tv == -1 && PyErr_Occurred())) { PyErr_Clear(); return 0; }
    return !f->has_last || *tv >= f->last_t;
}

/* Take n accepted bytes: append them, count the event, call on_full if full. */
static PyObject *frame_commit(OpenFrame *f, const char *data, Py_ssize_t n, long long t) {
    Py_ssize_t n0 = PyByteArray_GET_SIZE(f->buf);
    if (PyByteArray_Resize(f->buf, n0 + n)) return NULL;
    memcpy(PyByteArray_AS_STRING(f->buf) + n0, data, n);
    if (!f->count) f->first_t = t;
    f->count++;
    f->next_seq++;
    f->last_t = t;
    f->has_last = 1;
    if (f->count >= f->frame_events || n0 + n >= f->frame_bytes)
        return PyObject_CallNoArgs(f->on_full);
    Py_RETURN_NONE;
}

/* After an event failed to pack: clear an error that is the event's fault (a
 * value msgpack cannot hold: TypeError, ValueError, OverflowError), so the
 * caller takes the dict path, which raises it again. 0 when another error
 * (MemoryError and the like) is set and must propagate; 1 otherwise. */
static int clear_event_error(void) {
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError) && !PyErr_ExceptionMatches(PyExc_ValueError)
                && !PyErr_ExceptionMatches(PyExc_OverflowError))
            return 0;
        PyErr_Clear();
    }
    return 1;
}

PyDoc_STRVAR(frame_hc_doc,
"hc(abi, nr, name, args, op, ret, rip, via, rd, wr, ev, seq, t, cpu)\n\n"
"Append the hypercall event pvmon.trace.format.hc_event(abi, ..., cpu) (the bytes\n"
"pack_hc writes). When seq, t or the frame do not pass the checks, or a value\n"
"cannot be packed or packs to more than max_event bytes, returns\n"
"fallback(abi, ..., cpu) instead, which raises the error.");

static PyObject *frame_hc(OpenFrame *f, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != HC_NARGS) {
        PyErr_Format(PyExc_TypeError, "hc takes %zd arguments (%zd given)", HC_NARGS, nargs);
        return NULL;
    }
    long long t;
    if (frame_accepts(f, args[HC_NARGS - 3], args[HC_NARGS - 2], &t)) {
        Out o;
        out_init(&o);
        if (!pack_hc_into(&o, args) && o.len <= f->max_event) {
            PyObject *r = frame_commit(f, o.p, o.len, t);
            out_free(&o);
            return r;
        }
        out_free(&o);
        if (!clear_event_error())
            return NULL;
    }
    return PyObject_Vectorcall(f->fallback, args, nargs, NULL);
}

PyDoc_STRVAR(frame_add_doc,
"add(data, seq, t) -> bool\n\n"
"Append one packed event (bytes) whose seq and t (ns) are given. False, with\n"
"nothing changed, when they or the frame do not pass the checks or data is\n"
"longer than max_event; True once appended (on_full called if the frame filled).");

static PyObject *frame_add(OpenFrame *f, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "add(data: bytes, seq: int, t: int)");
        return NULL;
    }
    long long t;
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    if (!frame_accepts(f, args[1], args[2], &t) || n > f->max_event) Py_RETURN_FALSE;
    PyObject *r = frame_commit(f, PyBytes_AS_STRING(args[0]), n, t);
    if (!r) return NULL;
    Py_DECREF(r);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(frame_ev_doc,
"ev(keys, *values) -> bool\n\n"
"Append the event dict(zip(keys, values)) as pack_event packs it (a map in the\n"
"order of keys): keys a tuple of at most 15 str whose last three are seq, t and\n"
"cpu, one value per key. False, with nothing changed, when seq, t or the frame\n"
"do not pass the checks, a value cannot be packed or the event packs to more than\n"
"max_event bytes: the caller then takes the dict path, which raises the error.\n"
"True once appended (on_full called if the frame filled).");

static PyObject *frame_ev(OpenFrame *f, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t n = nargs - 1;
    if (n < 3 || n > 15 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) != n) {
        PyErr_SetString(PyExc_TypeError, "ev(keys: tuple of 3-15 str, *values: one per key)");
        return NULL;
    }
    PyObject *keys = args[0];
    PyObject *const *vals = args + 1;
    long long t;
    if (!frame_accepts(f, vals[n - 3], vals[n - 2], &t)) Py_RETURN_FALSE;
    Out o;
    out_init(&o);
    unsigned char head = 0x80 | (unsigned char)n;         /* fixmap of n */
    int bad = put(&o, &head, 1);
    for (Py_ssize_t i = 0; !bad && i < n; i++) {
        PyObject *k = PyTuple_GET_ITEM(keys, i);
        if (!PyUnicode_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "ev: keys must be str");
            bad = 1;
        } else {
            bad = put_str(&o, k) || pack(&o, vals[i], 1);
        }
    }
    if (bad || o.len > f->max_event) {
        out_free(&o);
        if (!clear_event_error())
            return NULL;
        Py_RETURN_FALSE;
    }
    PyObject *r = frame_commit(f, o.p, o.len, t);
    out_free(&o);
    if (!r) return NULL;
    Py_DECREF(r);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(frame_take_doc,
"take() -> (raw, count, first_seq, first_t, last_t) | None\n\n"
"Hand over the frame (raw: its msgpack bytes, a bytearray) and start an empty\n"
"one; None when it holds no event.");

static PyObject *frame_take(OpenFrame *f, PyObject *unused) {
    if (!f->count) Py_RETURN_NONE;
    PyObject *fresh = PyByteArray_FromStringAndSize(NULL, 0);
    if (!fresh) return NULL;
    PyObject *r = Py_BuildValue("(OnLLL)", f->buf, f->count, f->next_seq - f->count,
                                f->first_t, f->last_t);
    if (!r) { Py_DECREF(fresh); return NULL; }
    Py_SETREF(f->buf, fresh);
    f->count = 0;
    return r;
}

static PyObject *frame_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *names[] = {"frame_events", "frame_bytes", "max_event", "on_full", "fallback",
                            NULL};
    Py_ssize_t fe, fb, me;
    PyObject *on_full, *fallback;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "nnnOO:OpenFrame", names, &fe, &fb, &me, &on_full,
                                     &fallback))
        return NULL;
    if (fe < 1 || fb < 1 || me < 1 || !PyCallable_Check(on_full) || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_ValueError, "OpenFrame: sizes must be >= 1, callbacks callable");
        return NULL;
    }
    OpenFrame *f = (OpenFrame *)type->tp_alloc(type, 0);
    if (!f) return NULL;
    if (!(f->buf = PyByteArray_FromStringAndSize(NULL, 0))) { Py_DECREF(f); return NULL; }
    f->frame_events = fe;
    f->frame_bytes = fb;
    f->max_event = me;
    f->on_full = Py_NewRef(on_full);
    f->fallback = Py_NewRef(fallback);
    return (PyObject *)f;
}

static int frame_traverse(OpenFrame *f, visitproc visit, void *arg) {
    Py_VISIT(f->on_full);
    Py_VISIT(f->fallback);
    return 0;
}

static int frame_clear(OpenFrame *f) {
    Py_CLEAR(f->on_full);
    Py_CLEAR(f->fallback);
    return 0;
}

static void frame_dealloc(OpenFrame *f) {
    PyObject_GC_UnTrack(f);
    frame_clear(f);
    Py_CLEAR(f->buf);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static PyObject *frame_get_last_t(OpenFrame *f, void *c) {
    if (!f->has_last) Py_RETURN_NONE;
    return PyLong_FromLongLong(f->last_t);
}

static PyGetSetDef frame_getset[] = {
    {"last_t", (getter)frame_get_last_t, NULL, "t (ns) of the last event accepted, or None", NULL},
    {NULL},
};

static PyMemberDef frame_members[] = {
    {"count", T_PYSSIZET, offsetof(OpenFrame, count), READONLY, "events in the frame"},
    {"next_seq", T_LONGLONG, offsetof(OpenFrame, next_seq), READONLY,
     "the seq the next event must carry"},
    {"closed", T_INT, offsetof(OpenFrame, closed), 0, "set: every event takes the long way"},
    {NULL},
};

static PyMethodDef frame_methods[] = {
    {"hc", (PyCFunction)(void (*)(void))frame_hc, METH_FASTCALL, frame_hc_doc},
    {"add", (PyCFunction)(void (*)(void))frame_add, METH_FASTCALL, frame_add_doc},
    {"ev", (PyCFunction)(void (*)(void))frame_ev, METH_FASTCALL, frame_ev_doc},
    {"take", (PyCFunction)frame_take, METH_NOARGS, frame_take_doc},
    {NULL},
};

PyDoc_STRVAR(frame_doc,
"OpenFrame(frame_events, frame_bytes, max_event, on_full, fallback)\n\n"
"A trace writer's open frame: events packed back to back, with the checks each\n"
"appended event must pass (seq = next_seq, int t in ns not before the last,\n"
"at most max_event bytes packed, not closed). on_full() is called once it holds\n"
"frame_events events or frame_bytes bytes; it is expected to take() it.");

static PyTypeObject OpenFrameType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pvmon.trace._evpack.OpenFrame",
    .tp_basicsize = sizeof(OpenFrame),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = frame_doc,
    .tp_new = frame_new,
    .tp_dealloc = (destructor)frame_dealloc,
    .tp_traverse = (traverseproc)frame_traverse,
    .tp_clear = (inquiry)frame_clear,
    .tp_methods = frame_methods,
    .tp_members = frame_members,
    .tp_getset = frame_getset,
};

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

PyMODINIT_FUNC PyInit__evpack(void) {
    if (PyType_Ready(&OpenFrameType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "OpenFrame", (PyObject *)&OpenFrameType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
