"""Real Xen releases other than the reference, each declared as the reference
(Xen 4.17) plus the differences a 64-bit PV domU can observe, every one with
its public source. Read by :mod:`pvmon.backends.xen.versions`.

Sources are xen.git paths at a release tag (``xen/include/public/...@RELEASE-x.y.z``)
or lines of Xen's CHANGELOG.md.
"""

from __future__ import annotations

from pvmon.backends.xen.versions import XEN_4_17, Change, register

# ----------------------------------------------------------------- Xen 3.4
# Released May 2009: the Xen that the paravirt_ops Linux ports of 2008-2010 met in the
# field. Interface version 0x00030209 (xen/include/public/xen-compat.h@3.4).
XEN_3_4 = register(XEN_4_17.derive("xen-3.4", [
    Change("subop", "event_channel_op", "init_control",
           source="xen/include/public/event_channel.h: EVTCHNOP_init_control, "
                  "EVTCHNOP_expand_array, EVTCHNOP_set_priority added in 4.4 (FIFO ABI)"),
    Change("subop", "event_channel_op", "expand_array",
           source="xen/include/public/event_channel.h (FIFO ABI, 4.4)"),
    Change("subop", "event_channel_op", "set_priority",
           source="xen/include/public/event_channel.h (FIFO ABI, 4.4)"),
    Change("capability", feature="fifo_events", source="FIFO event channels: Xen 4.4"),
    Change("hypercall", "xenpmu_op",
           source="xen/include/public/xen.h: __HYPERVISOR_xenpmu_op (40) added in 4.6"),
    Change("subop", "vcpu_op", "register_vcpu_time_memory_area",
           source="xen/include/public/vcpu.h: VCPUOP_register_vcpu_time_memory_area "
                  "added in 4.3"),
    Change("subop", "xen_version", "build_id",
           source="xen/include/public/version.h: XENVER_build_id added in 4.7"),
    Change("subop", "xen_version", "commandline",
           source="xen/include/public/version.h: XENVER_commandline added in 4.5"),
    Change("subop", "grant_table_op", "set_version",
           source="xen/include/public/grant_table.h: GNTTABOP_set_version "
                  "(grant tables v2) added in 4.0"),
    Change("subop", "grant_table_op", "get_version",
           source="xen/include/public/grant_table.h: GNTTABOP_get_version added in 4.1"),
    Change("feature", feature="memory_op_vnode_supported",
           source="xen/include/public/features.h: XENFEAT_memory_op_vnode_supported "
                  "(13) added in 4.6"),
    Change("feature", feature="not_direct_mapped",
           source="xen/include/public/features.h: XENFEAT_not_direct_mapped (17) "
                  "added in 4.15"),
    Change("hypercall", "tmem_op", present=True,
           source="Xen 3.4 introduced tmem (xen/include/public/tmem.h); removed in 4.13"),
], major=3, minor=4, extraversion=".4",
    description="Xen 3.4 (May 2009): 2-level event channels only, no PMU, no vNUMA",
    released="2009-05"))

# ----------------------------------------------------------------- Xen 4.20
XEN_4_20 = register(XEN_4_17.derive("xen-4.20", [
    Change("feature", feature="runstate_phys_area", present=True,
           source="xen/include/public/features.h: XENFEAT_runstate_phys_area (18), 4.18"),
    Change("feature", feature="vcpu_time_phys_area", present=True,
           source="xen/include/public/features.h: XENFEAT_vcpu_time_phys_area (19), 4.18"),
], major=4, minor=20, extraversion=".0",
    description="Xen 4.20 (Mar 2025): physical-address runstate and vcpu_time areas",
    released="2025-03"))
