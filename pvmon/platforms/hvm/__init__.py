"""The HVM platform shared by Xen PVH (and KVM next): firmware tables
(:mod:`.acpi`) and the local APIC (:mod:`.lapic`), as pure-Python models
with no engine dependency. See docs/hvm-platform.md."""
