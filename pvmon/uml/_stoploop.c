/*
 * pvmon.uml._stoploop: the UML tracer's ptrace stop loop in C.
 *
 * A UML boot to the shell makes about 36,000 host system calls, two ptrace
 * stops each (entry and exit), plus about 8,100 signal stops; the Python loop
 * of pvmon/uml/tracer.py spent about 9 us of Python per stop. StopLoop.run()
 * runs the same loop (waitpid(-1, __WALL), PTRACE_GETREGS at a call's exit,
 * PTRACE_SYSCALL to resume, signals passed on unchanged, helper threads
 * followed through their clone events) with the GIL released, and returns the
 * completed host calls in a batch: a list of tuples
 *
 *     (nr, [rdi, rsi, rdx, r10, r8, r9], ret, rip, t, cpu, data)
 *
 * nr: orig_rax (-1, which only rt_sigreturn leaves, is given as 15,
 * rt_sigreturn), ret: rax as a signed value, t: CLOCK_MONOTONIC ns minus the
 * t0 given to the constructor (time.monotonic_ns's clock), cpu: the thread's
 * index (0 the traced process, 1, 2, ... threads in the order first seen),
 * data: the bytes of the tracee's memory read at the exit stop (while the
 * tracee is stopped, with process_vm_readv) that the Python side needs, or None
 * (nothing to read, or the read failed; a short read gives fewer bytes):
 *
 *   wait4, ret > 0, status pointer set      4 bytes at the status pointer
 *   ptrace(PTRACE_GETREGS), ret 0           216 bytes (user_regs_struct) at data
 *   ptrace(PTRACE_SETREGS), ret 0           8 bytes at data + 80 (its rax)
 *   write to fd 1 or 2, ret > 0             ret bytes at the buffer
 *   read from fd 0, ret > 0                 ret bytes at the buffer
 *
 * The same rule is pvmon.uml.tracer._wanted (the Python fallback reads the same
 * bytes), so the events built from either loop are the same.
 *
 * run(max_records, max_ns) returns (why, records): why is
 *   0  batch full (max_records, or max_ns of host time since the call),
 *      or a console call (write to fd 1/2 or read from fd 0) was recorded
 *   1  waitpid was interrupted by a signal (Python's handlers can run)
 *   2  the traced process (main) has exited: .main_status is its wait status;
 *      call kill_threads() then run() again until 3
 *   3  done: no traced thread left (or no child at all)
 * OSError for any other waitpid failure.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>

#ifndef __WALL
#define __WALL 0x40000000
#endif

#define NR_READ 0
#define NR_WRITE 1
#define NR_RT_SIGRETURN 15
#define NR_WAIT4 61
#define NR_PTRACE 101
#define REQ_GETREGS 12
#define REQ_SETREGS 13
#define RAX_OFFSET 80                      /* offsetof(struct user_regs_struct, rax) */
#define SYSGOOD_TRAP (SIGTRAP | 0x80)

enum { WHY_BATCH = 0, WHY_EINTR = 1, WHY_MAIN_EXIT = 2, WHY_DONE = 3 };

typedef struct {
    pid_t tid;
    int cpu;
    char in_call;        /* between a system call's entry and exit stop */
    char fresh;          /* seen in a clone event, its first (SIGSTOP) stop not yet */
} Thread;

typedef struct {
    int64_t nr, ret, t;
    uint64_t args[6], rip;
    int cpu;
    Py_ssize_t off, len;   /* data in the arena; len -1: None */
} Record;

typedef struct {
    PyObject_HEAD
    pid_t main;
    int64_t t0;
    Thread *thr;
    int nthr, thr_cap;
    int ncpu;              /* cpu indexes handed out (the traced process's included) */
    long new_threads;      /* threads followed besides the traced process */
    long signals;          /* signal stops passed on */
    int main_exited;
    int main_status;
    Record *rec;
    Py_ssize_t nrec, rec_cap;
    char *arena;
    Py_ssize_t arena_len, arena_cap;
    int busy;
} StopLoop;

static Thread *find(StopLoop *s, pid_t tid)
{
    for (int i = 0; i < s->nthr; i++)
        if (s->thr[i].tid == tid)
            return &s->thr[i];
    return NULL;
}

static Thread *add(StopLoop *s, pid_t tid, int cpu)
{
    if (s->nthr == s->thr_cap) {
        int cap = s->thr_cap ? 2 * s->thr_cap : 8;
        Thread *t = realloc(s->thr, cap * sizeof(Thread));
        if (!t)
            return NULL;
        s->thr = t;
        s->thr_cap = cap;
    }
    Thread *t = &s->thr[s->nthr++];
    t->tid = tid;
    t->cpu = cpu;
    t->in_call = 0;
    t->fresh = 0;
    return t;
}

static void drop(StopLoop *s, pid_t tid)
{
    for (int i = 0; i < s->nthr; i++)
        if (s->thr[i].tid == tid) {
            s->thr[i] = s->thr[--s->nthr];
            return;
        }
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Read size bytes of pid's memory at addr into the arena; sets off/len (len -1: failed). */
static int read_into(StopLoop *s, pid_t pid, uint64_t addr, size_t size, Record *r)
{
    if (s->arena_len + (Py_ssize_t)size > s->arena_cap) {
        Py_ssize_t cap = s->arena_cap ? s->arena_cap : 65536;
        while (cap < s->arena_len + (Py_ssize_t)size)
            cap *= 2;
        char *a = realloc(s->arena, cap);
        if (!a)
            return -1;
        s->arena = a;
        s->arena_cap = cap;
    }
    struct iovec local = {s->arena + s->arena_len, size};
    struct iovec remote = {(void *)(uintptr_t)addr, size};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n < 0) {
        r->len = -1;
        return 0;
    }
    r->off = s->arena_len;
    r->len = n;
    s->arena_len += n;
    return 0;
}

static void StopLoop_dealloc(StopLoop *s)
{
    free(s->thr);
    free(s->rec);
    free(s->arena);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int StopLoop_init(StopLoop *s, PyObject *args, PyObject *kw)
{
    static char *names[] = {"pid", "t0", NULL};
    int pid;
    long long t0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iL", names, &pid, &t0))
        return -1;
    s->main = pid;
    s->t0 = t0;
    s->nthr = 0;
    if (!add(s, pid, 0)) {
        PyErr_NoMemory();
        return -1;
    }
    s->ncpu = 1;
    return 0;
}

/* The loop proper, GIL released. Returns a WHY_* or -1 with errno set (waitpid)
 * or -2 (out of memory). */
static int loop(StopLoop *s, Py_ssize_t max_records, int64_t max_ns)
{
    int64_t start = now_ns();
    struct user_regs_struct regs;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, __WALL);
        if (pid < 0) {
            if (errno == EINTR)
                return WHY_EINTR;
            if (errno == ECHILD)
                return WHY_DONE;
            return -1;
        }
        if (!WIFSTOPPED(status)) {
            drop(s, pid);
            if (pid == s->main) {
                s->main_exited = 1;
                s->main_status = status;
                return WHY_MAIN_EXIT;
            }
            if (s->main_exited && s->nthr == 0)
                return WHY_DONE;
            continue;
        }
        int sig = WSTOPSIG(status);
        Thread *th = find(s, pid);
        if (sig == SYSGOOD_TRAP) {
            if (!th || !th->in_call) {      /* entry: nothing to read yet */
                if (!th && !(th = add(s, pid, 0)))
                    return -2;
                th->in_call = 1;
                ptrace(PTRACE_SYSCALL, pid, 0, 0);
                continue;
            }
            th->in_call = 0;
            int cpu = th->cpu;
            if (ptrace(PTRACE_GETREGS, pid, 0, &regs) == -1) {
                /* gone (a SIGKILL): its end is reported by waitpid */
                ptrace(PTRACE_SYSCALL, pid, 0, 0);
                continue;
            }
            if (s->nrec == s->rec_cap) {
                Py_ssize_t cap = s->rec_cap ? 2 * s->rec_cap : 1024;
                Record *r = realloc(s->rec, cap * sizeof(Record));
                if (!r)
                    return -2;
                s->rec = r;
                s->rec_cap = cap;
            }
            Record *r = &s->rec[s->nrec++];
            int64_t nr = regs.orig_rax == (unsigned long long)-1 ? NR_RT_SIGRETURN
                                                                 : (int64_t)regs.orig_rax;
            int64_t ret = (int64_t)regs.rax;
            r->nr = nr;
            r->ret = ret;
            r->t = now_ns() - s->t0;
            r->args[0] = regs.rdi;
            r->args[1] = regs.rsi;
            r->args[2] = regs.rdx;
            r->args[3] = regs.r10;
            r->args[4] = regs.r8;
            r->args[5] = regs.r9;
            r->rip = regs.rip;
            r->cpu = cpu;
            r->len = -1;
            int console = 0, rc = 0;
            if (nr == NR_WAIT4) {
                if (ret > 0 && regs.rsi)
                    rc = read_into(s, pid, regs.rsi, 4, r);
            } else if (nr == NR_PTRACE) {
                if (ret == 0 && regs.rdi == REQ_GETREGS)
                    rc = read_into(s, pid, regs.r10, sizeof(struct user_regs_struct), r);
                else if (ret == 0 && regs.rdi == REQ_SETREGS)
                    rc = read_into(s, pid, regs.r10 + RAX_OFFSET, 8, r);
            } else if (nr == NR_WRITE && ret > 0 && (regs.rdi == 1 || regs.rdi == 2)) {
                rc = read_into(s, pid, regs.rsi, (size_t)ret, r);
                console = 1;
            } else if (nr == NR_READ && ret > 0 && regs.rdi == 0) {
                rc = read_into(s, pid, regs.rsi, (size_t)ret, r);
                console = 1;
            }
            ptrace(PTRACE_SYSCALL, pid, 0, 0);
            if (rc < 0)
                return -2;
            if (console || s->nrec >= max_records || r->t + s->t0 - start >= max_ns)
                return WHY_BATCH;
            continue;
        }
        int event = status >> 16;
        if (sig == SIGTRAP && event) {
            if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK
                    || event == PTRACE_EVENT_VFORK) {
                unsigned long child = 0;
                if (ptrace(PTRACE_GETEVENTMSG, pid, 0, &child) == 0
                        && !find(s, (pid_t)child)) {
                    Thread *t = add(s, (pid_t)child, s->ncpu++);
                    if (!t)
                        return -2;
                    t->fresh = 1;
                    s->new_threads++;
                }
            }
            ptrace(PTRACE_SYSCALL, pid, 0, 0);
            continue;
        }
        if (!th || th->fresh) {
            /* a new thread's first stop (its SIGSTOP; it may come before the
             * parent's clone event): start tracing its system calls */
            if (!th) {
                if (!(th = add(s, pid, s->ncpu++)))
                    return -2;
                s->new_threads++;
            } else {
                th->fresh = 0;
            }
            if (sig == SIGSTOP) {
                ptrace(PTRACE_SYSCALL, pid, 0, 0);
                continue;
            }
        }
        /* a signal for UML (its timer's SIGALRM, SIGIO, SIGCHLD, ...): pass it on */
        s->signals++;
        ptrace(PTRACE_SYSCALL, pid, 0, sig);
    }
}

static PyObject *StopLoop_run(StopLoop *s, PyObject *args)
{
    Py_ssize_t max_records = 1024;
    long long max_ns = 20000000;
    if (!PyArg_ParseTuple(args, "|nL", &max_records, &max_ns))
        return NULL;
    if (s->busy) {
        PyErr_SetString(PyExc_RuntimeError, "StopLoop.run is already running");
        return NULL;
    }
    if (max_records < 1)
        max_records = 1;
    s->busy = 1;
    s->nrec = 0;
    s->arena_len = 0;
    int why, err = 0;
    Py_BEGIN_ALLOW_THREADS
    why = loop(s, max_records, max_ns);
    err = errno;
    Py_END_ALLOW_THREADS
    s->busy = 0;
    if (why == -2)
        return PyErr_NoMemory();
    if (why == -1) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *list = PyList_New(s->nrec);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < s->nrec; i++) {
        Record *r = &s->rec[i];
        PyObject *a = PyList_New(6);
        if (!a)
            goto fail;
        for (int j = 0; j < 6; j++) {
            PyObject *v = PyLong_FromUnsignedLongLong(r->args[j]);
            if (!v) {
                Py_DECREF(a);
                goto fail;
            }
            PyList_SET_ITEM(a, j, v);
        }
        PyObject *data;
        if (r->len < 0) {
            data = Py_None;
            Py_INCREF(data);
        } else {
            data = PyBytes_FromStringAndSize(s->arena + r->off, r->len);
        }
        PyObject *t = data ? Py_BuildValue("(LNLKLiN)", (long long)r->nr, a, (long long)r->ret,
                                           (unsigned long long)r->rip, (long long)r->t,
                                           r->cpu, data)
                           : NULL;
        if (!t) {
            if (!data)
                Py_DECREF(a);
            goto fail;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return Py_BuildValue("(iN)", why, list);
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *StopLoop_kill_threads(StopLoop *s, PyObject *unused)
{
    /* SIGKILL the threads still followed after the traced process exited (helper
     * threads outliving it); those already gone are forgotten. Returns how many
     * are left to reap. */
    (void)unused;
    for (int i = 0; i < s->nthr;) {
        if (kill(s->thr[i].tid, SIGKILL) == -1 && errno == ESRCH) {
            s->thr[i] = s->thr[--s->nthr];
            continue;
        }
        i++;
    }
    return PyLong_FromLong(s->nthr);
}

static PyMethodDef StopLoop_methods[] = {
    {"run", (PyCFunction)StopLoop_run, METH_VARARGS,
     "run(max_records=1024, max_ns=20_000_000) -> (why, records): trace until a batch "
     "is complete (see the module doc)."},
    {"kill_threads", (PyCFunction)StopLoop_kill_threads, METH_NOARGS,
     "kill_threads() -> int: SIGKILL the followed threads left; how many remain."},
    {NULL},
};

static PyMemberDef StopLoop_members[] = {
    {"signals", T_LONG, offsetof(StopLoop, signals), READONLY,
     "signal stops passed on to the tracee"},
    {"new_threads", T_LONG, offsetof(StopLoop, new_threads), READONLY,
     "threads followed besides the traced process"},
    {"main_status", T_INT, offsetof(StopLoop, main_status), READONLY,
     "the traced process's wait status once it has exited"},
    {"threads_left", T_INT, offsetof(StopLoop, nthr), READONLY,
     "threads still followed"},
    {NULL},
};

static PyTypeObject StopLoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pvmon.uml._stoploop.StopLoop",
    .tp_basicsize = sizeof(StopLoop),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "StopLoop(pid, t0): the ptrace stop loop of a tracee started with "
              "PTRACE_TRACEME, its options set and resumed with PTRACE_SYSCALL.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)StopLoop_init,
    .tp_dealloc = (destructor)StopLoop_dealloc,
    .tp_methods = StopLoop_methods,
    .tp_members = StopLoop_members,
};

static struct PyModuleDef stoploop_module = {
    PyModuleDef_HEAD_INIT, "_stoploop",
    "The UML tracer's ptrace stop loop (pvmon/uml/tracer.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__stoploop(void)
{
    if (PyType_Ready(&StopLoopType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&stoploop_module);
    if (!m)
        return NULL;
    Py_INCREF(&StopLoopType);
    if (PyModule_AddObject(m, "StopLoop", (PyObject *)&StopLoopType) < 0) {
        Py_DECREF(&StopLoopType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
