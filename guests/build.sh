#!/bin/sh
# Build pvmon's built-in reference guests and install them into
# pvmon/guests/images/.  With --check, rebuild and compare instead: exit 1
# if any image (or BUILDINFO) differs from the committed one.
#
#   guests/build.sh            build pvtest-v1.elf, pvtest-v2.elf, pvtest-v2-fail.elf,
#                              pvtest-v2-rules.elf, pvtest-v2-poc.elf,
#                              pvtest-v2-smp.elf (the SMP checks; --vcpus 2),
#                              pvtest-v2-pvh.elf (the Xen PVH build),
#                              pvtest-lguest.elf, pvtest-lguest-fail.elf,
#                              pvtest-lguest-pae.elf (lguest, x86-32),
#                              pvtest-vmi.elf, pvtest-vmi-fail.elf (VMI 3.0, x86-32),
#                              pvtest-kvm.elf, pvtest-kvm-fail.elf (KVM, x86-64)
#   guests/build.sh --check    verify the committed images rebuild identically
#
# The images are byte-reproducible with the toolchain named in BUILDINFO
# (Debian 12: gcc 12.2.0, binutils 2.40).  Environment: CC, LD may override.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
images="$here/../pvmon/guests/images"
mode=install
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

CC=${CC:-gcc}
LD=${LD:-ld}
export LC_ALL=C

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pvtest-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

build() {
    make -s -C "$here" CC="$CC" LD="$LD" OUT="$tmp" "$@"
}
build VARIANT=1
build VARIANT=2
build VARIANT=2 FAIL_CHECK=1
build VARIANT=2 RULES=1
build VARIANT=2 POC=1
build VARIANT=2 SMP=1
build VARIANT=2 PVH=1
build LGUEST=1
build LGUEST=1 FAIL_CHECK=1
build LGUEST=1 PAE=1
build VMI=1
build VMI=1 FAIL_CHECK=1
build KVM=1
build KVM=1 FAIL_CHECK=1

{
    echo "# toolchain that produced these images (guests/build.sh)"
    echo "cc: $("$CC" --version | head -n 1)"
    echo "ld: $("$LD" --version | head -n 1)"
    echo "# sha256"
    (cd "$tmp" && sha256sum pvtest-v1.elf pvtest-v2.elf pvtest-v2-fail.elf pvtest-v2-rules.elf \
        pvtest-v2-poc.elf pvtest-v2-smp.elf pvtest-v2-pvh.elf pvtest-lguest.elf pvtest-lguest-fail.elf \
        pvtest-lguest-pae.elf pvtest-vmi.elf pvtest-vmi-fail.elf pvtest-kvm.elf \
        pvtest-kvm-fail.elf)
} > "$tmp/BUILDINFO"

files="pvtest-v1.elf pvtest-v2.elf pvtest-v2-fail.elf pvtest-v2-rules.elf pvtest-v2-poc.elf
pvtest-v2-smp.elf pvtest-v2-pvh.elf pvtest-lguest.elf pvtest-lguest-fail.elf pvtest-lguest-pae.elf pvtest-vmi.elf
pvtest-vmi-fail.elf pvtest-kvm.elf pvtest-kvm-fail.elf BUILDINFO"
if [ "$mode" = install ]; then
    mkdir -p "$images"
    for f in $files; do
        cp "$tmp/$f" "$images/$f"
    done
    (cd "$images" && ls -l pvtest-*.elf)
    exit 0
fi

status=0
for f in $files; do
    if ! cmp -s "$tmp/$f" "$images/$f"; then
        echo "differs: pvmon/guests/images/$f" >&2
        status=1
    fi
done
if [ "$status" -eq 0 ]; then
    echo "ok: committed images rebuild identically"
else
    echo "rebuilt BUILDINFO:" >&2
    cat "$tmp/BUILDINFO" >&2
fi
exit "$status"
