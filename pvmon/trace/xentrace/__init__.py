"""xentrace in and out: Xen's binary trace records (xen/include/public/trace.h)
written from a pvmon trace (:mod:`.export`) and read into one (:mod:`.reader`,
:mod:`.importer`). See docs/xentrace.md."""
