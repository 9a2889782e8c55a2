/* The engine's time slicer: a Unicorn UC_HOOK_BLOCK callback that ends
 * emu_start after a budget of translated blocks (pvmon/engine/slicer.py).
 *
 * It runs once per executed translation block, so it is written in C: the
 * same logic as a Python callback costs a ctypes call per block. The state is
 * a struct the Python side owns and passes as the hook's user_data:
 *
 *   struct { int64_t left; int64_t expired; void *stop; }
 *
 * left > 0: blocks still allowed; reaching 0 sets expired = 1 and calls
 * stop (uc_emu_stop). left <= 0: no budget (never stops).
 * It is a Python extension module only so that setup.py builds it; Python
 * reaches the callback through ctypes (pvmon_slice_block_cb). */
#include <Python.h>
#include <stdint.h>

typedef int (*uc_stop_fn)(void *uc);

struct pvmon_slice {
    int64_t left;
    int64_t expired;
    uc_stop_fn stop;
};

void pvmon_slice_block_cb(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct pvmon_slice *s = (struct pvmon_slice *)user_data;
    (void)address;
    (void)size;
    if (s->left > 0 && --s->left == 0) {
        s->expired = 1;
        s->stop(uc);
    }
}

static struct PyModuleDef slicer_module = {
    PyModuleDef_HEAD_INIT, "_slicer",
    "The engine's block-budget hook (C callback reached through ctypes).", -1, NULL,
};

PyMODINIT_FUNC PyInit__slicer(void)
{
    return PyModule_Create(&slicer_module);
}
