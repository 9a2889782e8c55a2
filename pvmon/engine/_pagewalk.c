/* The guest page walk of pvmon/engine/machine.py (Machine.walk), in C.
 *
 * A Xen PV boot reads guest memory through guest-virtual addresses about
 * 50,000 times (every hypercall argument), each a four-level walk; the same
 * walk in Python costs about a microsecond. This module does only the walk:
 * the caller passes the host address and size of the guest's machine memory
 * (Machine owns that mapping and outlives every call), and turns a fault into
 * its GuestPageFault with the #PF error code.
 *
 * walk(mem_addr, mem_size, cr3, va, need) -> (machine address, pte address)
 *   on success, or an int on a fault: the paging entry the walk stopped at
 *   (0 for a non-canonical address or an entry outside memory), from which the
 *   caller builds the error code. need: the PTE bits the access needs (P, and
 *   RW for a write, US for a user access). 4 KiB, 2 MiB and 1 GiB pages.
 * Entry format: Intel SDM Vol. 3A, 4.5 (4-level paging).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PTE_PS (1ULL << 7)
#define PTE_ADDR_MASK 0x000FFFFFFFFFF000ULL

static PyObject *pagewalk_walk(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "walk(mem_addr, mem_size, cr3, va, need)");
        return NULL;
    }
    uint64_t vals[5];
    for (int i = 0; i < 5; i++) {
        vals[i] = PyLong_AsUnsignedLongLongMask(args[i]);
        if (vals[i] == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    }
    const unsigned char *mem = (const unsigned char *)(uintptr_t)vals[0];
    uint64_t size = vals[1], va = vals[3], need = vals[4];
    uint64_t top = va >> 47;
    if (top && top != 0x1FFFF)
        return PyLong_FromLong(0);
    uint64_t table = vals[2] & PTE_ADDR_MASK;
    for (int shift = 39; shift >= 12; shift -= 9) {
        uint64_t ea = table | ((va >> (shift - 3)) & 0xFF8);
        if (size < 8 || ea > size - 8)
            return PyLong_FromLong(0);
        uint64_t e;
        memcpy(&e, mem + ea, 8);               /* little-endian host, as the guest */
        if ((e & need) != need)
            return PyLong_FromUnsignedLongLong(e);
        if ((e & PTE_PS) && (shift == 30 || shift == 21)) {
            uint64_t size_mask = (1ULL << shift) - 1;
            return Py_BuildValue("(KK)", (unsigned long long)((e & PTE_ADDR_MASK & ~size_mask)
                                                              | (va & size_mask)),
                                 (unsigned long long)ea);
        }
        table = e & PTE_ADDR_MASK;
        if (shift == 12)
            return Py_BuildValue("(KK)", (unsigned long long)(table | (va & 0xFFF)),
                                 (unsigned long long)ea);
    }
    Py_RETURN_NONE;                            /* not reached */
}

static PyMethodDef pagewalk_methods[] = {
    {"walk", (PyCFunction)(void (*)(void))pagewalk_walk, METH_FASTCALL,
     "walk(mem_addr, mem_size, cr3, va, need) -> (machine address, pte address), "
     "or the paging entry (int) a faulting walk stopped at (0: non-canonical or "
     "outside memory)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef pagewalk_module = {
    PyModuleDef_HEAD_INIT, "_pagewalk",
    "The guest page walk of Machine.walk, in C.", -1, pagewalk_methods,
};

PyMODINIT_FUNC PyInit__pagewalk(void)
{
    return PyModule_Create(&pagewalk_module);
}
