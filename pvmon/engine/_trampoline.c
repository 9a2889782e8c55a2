/* C trampolines for the engine's instruction hooks: SYSCALL, IN, OUT, RDTSC and
 * RDTSCP (pvmon/engine/ucinternals.py, UcInternals.hook_syscall_and_ports and
 * hook_tsc).
 *
 * Unicorn calls an instruction hook as a C function. Through a ctypes CFUNCTYPE
 * every call builds ctypes argument objects and a tuple and looks the callback
 * up through ctypes' machinery: about 0.35 us of the 0.55 us a hooked `in`
 * costs. These callbacks take the GIL and call the Python handler straight
 * through the vectorcall protocol instead. The handlers, the error sink and the
 * register slots they write live in a Trampoline object, whose address Python
 * passes to uc_hook_add as the hook's user_data; Python keeps the object alive
 * for as long as the hooks exist and reaches the callbacks' addresses through
 * ctypes (the module is a Python extension only so that setup.py builds it).
 *
 * Semantics are those of the ctypes callbacks they replace: on_in's result is
 * masked to 32 bits, on_tsc's to 64 (EDX:EAX get its halves, RDTSCP also sets
 * ECX = TSC_AUX = 0, and the hook returns 1 so Unicorn skips its host TSC), and
 * an exception raised by a handler is passed to on_error (which stops emulation;
 * emu_start re-raises it) while the hook returns 0 / nothing. */
#include <Python.h>
#include <stdint.h>
#include "structmember.h"

typedef struct {
    PyObject_HEAD
    PyObject *on_syscall;   /* () -> None */
    PyObject *on_in;        /* (port, size) -> int */
    PyObject *on_out;       /* (port, size, value) -> None */
    PyObject *on_tsc;       /* (tsc_arg) -> int */
    PyObject *tsc_arg;      /* what on_tsc is called with (the Uc) */
    PyObject *on_error;     /* (exception) -> None */
    uint64_t *rax, *rcx, *rdx;  /* the engine's env->regs slots */
} Trampoline;

static void tramp_fail(Trampoline *t)
{
    PyObject *type, *value, *tb, *r;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        value = Py_None;
        Py_INCREF(value);
    }
    if (tb != NULL && value != Py_None) {
        PyException_SetTraceback(value, tb);
    }
    r = PyObject_CallOneArg(t->on_error, value);
    if (r == NULL) {
        PyErr_WriteUnraisable(t->on_error);
    } else {
        Py_DECREF(r);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

void pvmon_tramp_syscall(void *uc, void *user_data)
{
    Trampoline *t = (Trampoline *)user_data;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *r = PyObject_CallNoArgs(t->on_syscall);
    (void)uc;
    if (r == NULL) {
        tramp_fail(t);
    } else {
        Py_DECREF(r);
    }
    PyGILState_Release(g);
}

uint32_t pvmon_tramp_in(void *uc, uint32_t port, int size, void *user_data)
{
    Trampoline *t = (Trampoline *)user_data;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *args[2] = {PyLong_FromUnsignedLong(port), PyLong_FromLong(size)};
    PyObject *r = NULL;
    uint32_t value = 0;
    (void)uc;
    if (args[0] != NULL && args[1] != NULL) {
        r = PyObject_Vectorcall(t->on_in, args, 2, NULL);
    }
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
    if (r != NULL) {
        value = (uint32_t)PyLong_AsUnsignedLongLongMask(r);
        Py_DECREF(r);
    }
    if (PyErr_Occurred()) {
        value = 0;
        tramp_fail(t);
    }
    PyGILState_Release(g);
    return value;
}

void pvmon_tramp_out(void *uc, uint32_t port, int size, uint32_t value, void *user_data)
{
    Trampoline *t = (Trampoline *)user_data;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *args[3] = {PyLong_FromUnsignedLong(port), PyLong_FromLong(size),
                         PyLong_FromUnsignedLong(value)};
    PyObject *r = NULL;
    (void)uc;
    if (args[0] != NULL && args[1] != NULL && args[2] != NULL) {
        r = PyObject_Vectorcall(t->on_out, args, 3, NULL);
    }
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
    Py_XDECREF(args[2]);
    if (r != NULL) {
        Py_DECREF(r);
    }
    if (PyErr_Occurred()) {
        tramp_fail(t);
    }
    PyGILState_Release(g);
}

static int tramp_tsc(Trampoline *t, int rdtscp)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *r = PyObject_CallOneArg(t->on_tsc, t->tsc_arg);
    if (r != NULL) {
        uint64_t v = (uint64_t)PyLong_AsUnsignedLongLongMask(r);
        Py_DECREF(r);
        if (!PyErr_Occurred()) {
            *t->rax = v & 0xFFFFFFFFu;
            *t->rdx = v >> 32;
            if (rdtscp) {
                *t->rcx = 0;
            }
        }
    }
    if (PyErr_Occurred()) {
        tramp_fail(t);
    }
    PyGILState_Release(g);
    return 1;
}

int pvmon_tramp_rdtsc(void *uc, void *user_data)
{
    (void)uc;
    return tramp_tsc((Trampoline *)user_data, 0);
}

int pvmon_tramp_rdtscp(void *uc, void *user_data)
{
    (void)uc;
    return tramp_tsc((Trampoline *)user_data, 1);
}

static int tramp_init(Trampoline *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"on_syscall", "on_in", "on_out", "on_tsc", "tsc_arg",
                             "on_error", "rax", "rcx", "rdx", NULL};
    PyObject *f[6];
    unsigned long long rax, rcx, rdx;
    int i;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOKKK", kwlist, &f[0], &f[1], &f[2],
                                     &f[3], &f[4], &f[5], &rax, &rcx, &rdx)) {
        return -1;
    }
    for (i = 0; i < 6; i++) {
        if (i != 4 && f[i] != Py_None && !PyCallable_Check(f[i])) {
            PyErr_SetString(PyExc_TypeError, "Trampoline handlers must be callable or None");
            return -1;
        }
        Py_INCREF(f[i]);
    }
    Py_XSETREF(self->on_syscall, f[0]);
    Py_XSETREF(self->on_in, f[1]);
    Py_XSETREF(self->on_out, f[2]);
    Py_XSETREF(self->on_tsc, f[3]);
    Py_XSETREF(self->tsc_arg, f[4]);
    Py_XSETREF(self->on_error, f[5]);
    self->rax = (uint64_t *)(uintptr_t)rax;
    self->rcx = (uint64_t *)(uintptr_t)rcx;
    self->rdx = (uint64_t *)(uintptr_t)rdx;
    return 0;
}

static int tramp_traverse(Trampoline *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_syscall);
    Py_VISIT(self->on_in);
    Py_VISIT(self->on_out);
    Py_VISIT(self->on_tsc);
    Py_VISIT(self->tsc_arg);
    Py_VISIT(self->on_error);
    return 0;
}

static int tramp_clear(Trampoline *self)
{
    Py_CLEAR(self->on_syscall);
    Py_CLEAR(self->on_in);
    Py_CLEAR(self->on_out);
    Py_CLEAR(self->on_tsc);
    Py_CLEAR(self->tsc_arg);
    Py_CLEAR(self->on_error);
    return 0;
}

static void tramp_dealloc(Trampoline *self)
{
    PyObject_GC_UnTrack(self);
    tramp_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *tramp_address(Trampoline *self, void *closure)
{
    (void)closure;
    return PyLong_FromVoidPtr((void *)self);
}

static PyGetSetDef tramp_getset[] = {
    {"address", (getter)tramp_address, NULL,
     "The object's address: the user_data to give uc_hook_add.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TrampolineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pvmon.engine._trampoline.Trampoline",
    .tp_doc = "Trampoline(on_syscall, on_in, on_out, on_tsc, tsc_arg, on_error, rax, rcx, rdx):"
              " the Python handlers and register slots of the C instruction hooks.",
    .tp_basicsize = sizeof(Trampoline),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)tramp_init,
    .tp_dealloc = (destructor)tramp_dealloc,
    .tp_traverse = (traverseproc)tramp_traverse,
    .tp_clear = (inquiry)tramp_clear,
    .tp_getset = tramp_getset,
};

static struct PyModuleDef tramp_module = {
    PyModuleDef_HEAD_INIT, "_trampoline",
    "C callbacks for Unicorn's instruction hooks that call Python handlers directly.", -1, NULL,
};

PyMODINIT_FUNC PyInit__trampoline(void)
{
    PyObject *m;
    if (PyType_Ready(&TrampolineType) < 0) {
        return NULL;
    }
    m = PyModule_Create(&tramp_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&TrampolineType);
    if (PyModule_AddObject(m, "Trampoline", (PyObject *)&TrampolineType) < 0) {
        Py_DECREF(&TrampolineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
