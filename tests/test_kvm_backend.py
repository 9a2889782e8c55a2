"""The KVM backend's answers, on a real machine's memory: CPUID leaves per
version, kvmclock and the other paravirtual MSRs (with KVM's #GP cases),
hypercalls (-KVM_ENOSYS), the version data and the CLI listing."""

import struct

import pytest
from click.testing import CliRunner

from pvmon.backends.kvm import abi
from pvmon.backends.kvm.backend import WALLCLOCK_EPOCH, KvmBackend, kvm_cpuid_policy
from pvmon.backends.kvm.pvclock import scale_delta, tsc_khz, unpack_time_info
from pvmon.backends.kvm.versions import REGISTRY, builtin_names
from pvmon.backends.registry import get_backend, guest_kind, list_backends
from pvmon.cli import cli
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.engine.hvm import MSR_GP, MSR_HANDLED
from pvmon.engine.machine import Machine

MiB = 1 << 20


def _attached(name="kvm-6.12"):
    m = Machine(32 * MiB)
    b = KvmBackend(REGISTRY[name])
    b.attach(m, None, RecordingGuestAccess(m, record=True), None, 32 * MiB, "t")
    return m, b


def test_versions_are_listed_oldest_first_with_sources():
    names = builtin_names()
    assert names[0] == "kvm-2.6.34" and names[-1] == "kvm-6.12" and len(names) >= 4
    for n in names:
        for c in REGISTRY[n].changes:
            assert c.source, (n, c)


def test_cpuid_leaves_sign_kvm_and_offer_each_versions_bits():
    new, old = kvm_cpuid_policy(REGISTRY["kvm-6.12"]), kvm_cpuid_policy(REGISTRY["kvm-2.6.34"])
    assert new[(0x40000000, 0)] == (0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D)
    assert old[(0x40000000, 0)][0] == 0           # early KVM: EAX 0
    feats = new[(0x40000001, 0)][0]
    for bit in ("CLOCKSOURCE2", "PV_EOI", "STEAL_TIME", "ASYNC_PF_INT", "CLOCKSOURCE_STABLE_BIT"):
        assert feats >> abi.FEATURE_BITS[bit] & 1, bit
    assert not feats >> abi.FEATURE_BITS["MIGRATION_CONTROL"] & 1
    assert old[(0x40000001, 0)][0] == 0b111       # CLOCKSOURCE, NOP_IO_DELAY, MMU_OP
    _, _, ecx, edx = new[(1, 0)]
    assert ecx >> 31 & 1 and ecx >> 24 & 1 and edx >> 9 & 1   # hypervisor, TSC-deadline, APIC
    assert new[(6, 0)][0] & 4                                  # ARAT
    assert not new[(0x80000007, 0)][3] >> 8 & 1                # no invariant TSC
    assert (0x40000002, 0) not in new                          # no Xen leaves


def test_system_time_msr_writes_a_pvclock_record_on_virtual_time():
    m, b = _attached()
    m.clock.advance(123_456)
    pa = 0x5000
    assert b.msr(True, abi.MSR_KVM_SYSTEM_TIME_NEW, pa | 1) == (MSR_HANDLED, pa | 1)
    rec = unpack_time_info(m.read_phys(pa, 32))
    assert rec["version"] % 2 == 0 and rec["version"] > 0
    assert rec["system_time"] == 123_456 and rec["tsc_timestamp"] == m.clock.tsc_at(123_456)
    assert tsc_khz(rec["mul"], rec["shift"]) == m.clock.tsc_khz
    assert rec["flags"] & abi.PVCLOCK_TSC_STABLE_BIT
    # the guest's reading later equals virtual time
    m.clock.advance(5_000_000)
    tsc = m.clock.tsc_at(m.clock.now_ns)
    got = rec["system_time"] + scale_delta(tsc - rec["tsc_timestamp"], rec["mul"], rec["shift"])
    assert got == m.clock.now_ns
    assert b.msr(False, abi.MSR_KVM_SYSTEM_TIME_NEW, 0) == (MSR_HANDLED, pa | 1)
    b.msr(True, abi.MSR_KVM_SYSTEM_TIME_NEW, pa | 1)
    assert unpack_time_info(m.read_phys(pa, 32))["version"] == rec["version"] + 2


def test_wall_clock_msr_gives_the_fixed_boot_time():
    m, b = _attached()
    b.msr(True, abi.MSR_KVM_WALL_CLOCK_NEW, 0x6000)
    version, sec, nsec = struct.unpack("<III", m.read_phys(0x6000, 12))
    assert version % 2 == 0 and (sec, nsec) == (WALLCLOCK_EPOCH & 0xFFFFFFFF, 0)


def test_old_kvm_has_only_the_old_clock_msrs():
    m, b = _attached("kvm-2.6.34")
    assert b.msr(True, abi.MSR_KVM_SYSTEM_TIME_NEW, 0x5001) == (MSR_GP, 0)
    assert b.msr(True, abi.MSR_KVM_SYSTEM_TIME, 0x5001)[0] == MSR_HANDLED
    assert unpack_time_info(m.read_phys(0x5000, 32))["flags"] == 0   # no stable bit
    assert b.msr(True, abi.MSR_KVM_PV_EOI_EN, 0x7001) == (MSR_GP, 0)


@pytest.mark.parametrize("msr,value", [
    (abi.MSR_KVM_STEAL_TIME, 0x7000 | 2 | 1),        # reserved bits 5:1
    (abi.MSR_KVM_PV_EOI_EN, 0x7002 | 1),             # not 4-byte aligned
    (abi.MSR_KVM_ASYNC_PF_EN, 0x7000 | 0x10 | 1),    # reserved bits 5:4
    (abi.MSR_KVM_ASYNC_PF_INT, 0x1F3),               # vector is 8 bits
    (abi.MSR_KVM_POLL_CONTROL, 2),                   # only bit 0
    (abi.MSR_KVM_MIGRATION_CONTROL, 1),              # not KVM's to offer
])
def test_reserved_bits_and_absent_msrs_raise_gp_as_kvm_does(msr, value):
    _, b = _attached()
    assert b.msr(True, msr, value) == (MSR_GP, 0)


def test_steal_time_record_stays_at_zero_steal():
    m, b = _attached()
    m.write_phys(0x7000, b"\xff" * 64)
    assert b.msr(True, abi.MSR_KVM_STEAL_TIME, 0x7001)[0] == MSR_HANDLED
    steal, version, flags, preempted = struct.unpack_from("<QIIB", m.read_phys(0x7000, 17))
    assert (steal, flags, preempted) == (0, 0, 0) and version % 2 == 0


def test_msrs_not_kvms_are_left_to_the_platform():
    _, b = _attached()
    assert b.msr(False, 0xC0000080, 0) is None


def test_hypercalls_answer_enosys_for_unknown_and_unoffered_numbers():
    _, new = _attached()
    _, old = _attached("kvm-3.9")
    assert new.call(999, (0, 0, 0, 0)) == -abi.KVM_ENOSYS
    assert new.call(abi.HYPERCALL_NUMBERS["sched_yield"], (0, 0, 0, 0)) == 0
    assert old.call(abi.HYPERCALL_NUMBERS["sched_yield"], (0, 0, 0, 0)) == -abi.KVM_ENOSYS
    assert old.unsupported == {"sched_yield": 1} and new.unsupported == {"kvm_hc_999": 1}
    assert new.call(abi.HYPERCALL_NUMBERS["map_gpa_range"], (0, 1, 0, 0)) == -abi.KVM_ENOSYS


def test_clock_pairing_writes_wall_time_and_tsc():
    m, b = _attached()
    m.clock.advance(2_500_000_000)
    assert b.call(abi.HYPERCALL_NUMBERS["clock_pairing"], (0x8000, 0, 0, 0)) == 0
    sec, nsec, tsc = struct.unpack("<qqQ", m.read_phys(0x8000, 24))
    assert (sec, nsec) == (WALLCLOCK_EPOCH + 2, 500_000_000)
    assert tsc == m.clock.tsc_at(m.clock.now_ns)
    assert b.call(abi.HYPERCALL_NUMBERS["clock_pairing"], (0x8000, 1, 0, 0)) == \
        -abi.KVM_EOPNOTSUPP
    assert b.call(abi.HYPERCALL_NUMBERS["clock_pairing"], (1 << 40, 0, 0, 0)) == \
        -abi.KVM_EFAULT


def test_registry_builds_kvm_backends_and_their_guest_kind():
    b = get_backend("kvm-6.1")
    assert b.abi == "kvm" and b.name == "kvm-6.1"
    assert guest_kind(b).name == "kvm"
    listed = {e["name"]: e for e in list_backends()}
    assert listed["kvm-3.9"]["differences"] and listed["kvm-6.12"]["base"] is None


def test_backends_cli_lists_kvm_versions():
    r = CliRunner().invoke(cli, ["backends"])
    assert r.exit_code == 0
    for n in builtin_names():
        assert n in r.output


def test_a_xen_guest_mode_on_a_kvm_backend_is_one_line_exit_2():
    r = CliRunner().invoke(cli, ["run", "pvtest-v2", "--backend", "kvm-6.12", "--mode", "pvh"])
    assert r.exit_code == 2
    assert "no guest mode 'pvh'" in r.output and "Traceback" not in r.output


def test_a_xen_only_image_on_a_kvm_backend_is_one_line_exit_2():
    r = CliRunner().invoke(cli, ["run", "pvtest-v2", "--backend", "kvm-6.12"])
    assert r.exit_code == 2
    assert "no PVH entry note" in r.output and "Traceback" not in r.output


def test_more_memory_than_the_pc_holds_is_refused_in_one_line():
    from pvmon.backends.kvm import KVM_GUEST
    from pvmon.errors import PvmonError
    assert KVM_GUEST.extra_bytes_for(3 << 30) == 0
    with pytest.raises(PvmonError, match="at most 3072 MiB"):
        KVM_GUEST.extra_bytes_for(5 << 30)


def test_a_kvm_profile_removes_features_and_hypercalls_from_its_base(tmp_path):
    from pvmon.backends.profiles import load_profile
    p = tmp_path / "acme.toml"
    p.write_text('name = "acme-kvm"\nbase = "kvm-6.12"\n[remove]\n'
                 'features = ["PV_EOI", "KVM_FEATURE_STEAL_TIME"]\nhypercalls = ["sched_yield"]\n'
                 '[add]\nfeatures = ["MSI_EXT_DEST_ID"]\n')
    ver = load_profile(p)
    assert ver.abi == "kvm" and ver.name == "acme-kvm" and ver.profile_toml
    assert not ver.offers("PV_EOI") and not ver.offers("STEAL_TIME")
    assert ver.offers("MSI_EXT_DEST_ID") and "sched_yield" not in ver.hypercalls
    b = get_backend(str(p))
    assert isinstance(b, KvmBackend) and b.name == "acme-kvm"
    m = Machine(32 * MiB)
    b.attach(m, None, RecordingGuestAccess(m), None, 32 * MiB, "t")
    assert b.msr(True, abi.MSR_KVM_PV_EOI_EN, 0x7001) == (MSR_GP, 0)


def test_a_kvm_profile_with_an_unknown_feature_is_one_line(tmp_path):
    from pvmon.backends.profiles import load_profile
    from pvmon.errors import BackendError
    p = tmp_path / "bad.toml"
    p.write_text('base = "kvm-6.12"\n[remove]\nfeatures = ["PV_EIO"]\n')
    with pytest.raises(BackendError, match="unknown feature 'PV_EIO'"):
        load_profile(p)
