/* Reverse execution's code ranges (pvmon/gdb/codepages.py): the guest-virtual
 * ranges [pc, pc + size) of every block in Unicorn's translation cache.
 *
 * Unicorn's tcg_tb_foreach calls pvmon_tbwalk_cb once per translated block
 * (a few thousand at each snapshot of a Debian boot), so it is C: the same
 * callback through ctypes costs about 1.7 us a block. The state is a struct
 * the Python side owns and passes as the traversal's user data:
 *
 *   struct { uint64_t *out; uint64_t n; uint64_t cap; }
 *
 * Each block appends pc and pc + size to out (n counts words); a full out
 * stops the walk with n == cap (the caller retries with more room).
 * pvmon_tbwalk_merge then sorts the pairs and merges overlapping and adjacent
 * ones in place, returning the new word count.
 * It is a Python extension module only so that setup.py builds it; Python
 * reaches the functions through ctypes. */
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* offsetof(TranslationBlock, pc) and (..., size) in Unicorn 2.1.4 */
#define TB_PC 0
#define TB_SIZE 20

struct pvmon_tbwalk {
    uint64_t *out;
    uint64_t n;
    uint64_t cap;
};

int pvmon_tbwalk_cb(void *key, void *value, void *data)
{
    struct pvmon_tbwalk *w = (struct pvmon_tbwalk *)data;
    const uint8_t *tb = (const uint8_t *)value;
    uint64_t pc;
    uint16_t size;
    (void)key;
    if (w->n + 2 > w->cap) {
        w->n = w->cap;
        return 1;                       /* stop: out is full */
    }
    memcpy(&pc, tb + TB_PC, sizeof pc);
    memcpy(&size, tb + TB_SIZE, sizeof size);
    w->out[w->n++] = pc;
    w->out[w->n++] = pc + size;
    return 0;
}

static int cmp_pair(const void *a, const void *b)
{
    uint64_t x = ((const uint64_t *)a)[0], y = ((const uint64_t *)b)[0];
    return x < y ? -1 : x > y;
}

uint64_t pvmon_tbwalk_merge(uint64_t *pairs, uint64_t words)
{
    uint64_t i, k = 0;
    if (words < 2)
        return 0;
    qsort(pairs, words / 2, 2 * sizeof(uint64_t), cmp_pair);
    for (i = 2; i + 1 < words; i += 2) {
        if (pairs[i] <= pairs[k + 1]) {
            if (pairs[i + 1] > pairs[k + 1])
                pairs[k + 1] = pairs[i + 1];
        } else {
            k += 2;
            pairs[k] = pairs[i];
            pairs[k + 1] = pairs[i + 1];
        }
    }
    return k + 2;
}

static struct PyModuleDef tbwalk_module = {
    PyModuleDef_HEAD_INIT, "_tbwalk",
    "Reverse execution's translated-block walk (C callbacks reached through ctypes).", -1, NULL,
};

PyMODINIT_FUNC PyInit__tbwalk(void)
{
    return PyModule_Create(&tbwalk_module);
}
