/*
 * checks_ldt.c - the local descriptor table of a 64-bit PV guest under Xen
 * 4.17 (pvtest-v2-rules, RULES=1; docs/xen-rules.md "The LDT").
 *
 * Sources (xen.git, stable-4.17): xen/arch/x86/mm.c (MM: do_mmuext_op
 * MMUEXT_SET_LDT, new_guest_cr3, get_page_from_l1e, _get_page_type),
 * xen/arch/x86/include/asm/ldt.h (load_LDT), asm/desc.h (LDT_SELECTOR),
 * asm/x86_64/uaccess.h (__addr_ok), xen/arch/x86/pv/mm.c
 * (pv_map_ldt_shadow_page), xen/arch/x86/traps.c (TR: fixup_page_fault,
 * handle_ldt_mapping_fault), xen/arch/x86/pv/traps.c (pv_inject_event),
 * xen/arch/x86/pv/descriptor-tables.c (DT: pv_destroy_ldt,
 * validate_segdesc_page, check_descriptor, do_update_descriptor) and
 * xen/arch/x86/pv/iret.c (do_iret); the processor's own rules from the
 * Intel SDM (MOV to a segment register, far JMP, IRET).
 *
 * The user-mode runs go through checks_rules.c (rules_user_run) with the
 * code of user_ldt.S.  Xen maps an LDT page only when the first access
 * through a selector faults in its LDT area, so each check says which access
 * mapped (or failed to map) the page.  The guest ends with no LDT, its LDT
 * pages writable again and a null %fs with its old FS base.
 */
#include "pvtest.h"

#define MMUEXT_SET_LDT   13             /* xen.h */
#define USER_VA          0x400000UL     /* checks_rules.c: the user code page */
#define BLOB_VA          (USER_VA + 0x800)      /* rules_user_run copies code there */
#define LDT_SELECTOR     0xe050UL       /* asm/desc.h: (FIRST_RESERVED_GDT_ENTRY + 10) << 3 */
#define FLAT_RING3_CS64  0xe033UL       /* xen-x86_64.h */
#define FLAT_RING3_SS32  0xe02bUL
#define PFEC_USER        4UL
#define DPL_MASK         (3UL << 45)
#define SEL(i)           (((unsigned long)(i) << 3) | 7)   /* LDT entry i, TI=1, RPL 3 */
#define CS_SEL(cs)       ((cs) & 0xffffUL)

/* A descriptor: base, 20-bit limit, access byte (P DPL S type), flags nibble (G D L AVL). */
#define DESC(base, limit, access, flags)                                            \
    (((unsigned long)(limit) & 0xffffUL) | (((unsigned long)(base) & 0xffffffUL) << 16) | \
     ((unsigned long)(access) << 40) | ((((unsigned long)(limit) >> 16) & 0xfUL) << 48) | \
     ((unsigned long)(flags) << 52) | ((((unsigned long)(base) >> 24) & 0xffUL) << 56))
#define DATA3(base)      DESC(base, 0xfffff, 0xf3, 0xc)    /* data, DPL 3, accessed */
#define DATA0(base)      DESC(base, 0xfffff, 0x93, 0xc)    /* data, DPL 0 */
#define CODE32_3         DESC(0, 0xfffff, 0xfb, 0xc)       /* 32-bit code, DPL 3 */
#define CODE64_3         DESC(0, 0xfffff, 0xfb, 0xa)       /* 64-bit code, DPL 3 */
#define DESC_TSS         0x0000890000000067UL              /* a present 64-bit TSS */

/* user_ldt.S */
extern const char ldt_ublob[], ldt_ublob_end[], ldt_u_param[];
extern const char ldt_u_fs[], ldt_u_sldt[], ldt_u_ljmp[], ldt_u_mode[], ldt_u_ss[];

/* The LDT these checks load: two pages of descriptors. */
static uint64_t ldt_tab[2][512] __page_aligned;
static uint8_t blob[256] __attribute__((aligned(16)));
static const uint64_t magic = 0x4c44542d4d41474cUL;    /* user_ldt.S ldt_u_magic */

static long set_ldt(unsigned long base, unsigned long ents)
{
    struct mmuext_op op = { MMUEXT_SET_LDT, 0, base, ents };
    unsigned done = 0;
    return HYPERVISOR_mmuext_op(&op, 1, &done, DOMID_SELF);
}

/* Run the user code at sym with the parameter word = param, CS/SS as given. */
static unsigned long urun(const char *sym, unsigned long param, unsigned long cs,
                          unsigned long ss, unsigned long out[10])
{
    unsigned long n = (unsigned long)(ldt_ublob_end - ldt_ublob);
    if (n > sizeof(blob))
        return 0;
    memcpy(blob, ldt_ublob, n);
    memcpy(blob + (ldt_u_param - ldt_ublob), &param, sizeof(param));
    return rules_user_run(blob, n, (unsigned long)(sym - ldt_ublob), cs, ss, 2, out);
}

/* Load LDT selector sel into %fs in user mode: the entry it ended in. */
static unsigned long user_fs(unsigned long sel, unsigned long out[10])
{
    return urun(ldt_u_fs, sel, FLAT_RING3_CS64, FLAT_RING3_SS32, out);
}

/* The #PF of a user-mode load at ldt_u_fs's mov to %fs (6 bytes in: mov rip-rel). */
static int fs_fault(const unsigned long out[10], unsigned long n, unsigned long vec,
                    unsigned long err)
{
    return n == 1 && out[0] == vec && out[1] == err && out[2] == 6;
}

static unsigned long cr2(void)
{
    return ((volatile struct vcpu_info *)vcpu0())->cr2;
}

static void ldt_args(void)
{
    long rc;
    rc = set_ldt((unsigned long)ldt_tab, 8192);
    check_eq("SET_LDT of 8192 entries -> 0 (MM do_mmuext_op: only ents > 8192 is refused)",
             rc, 0);
    rc = set_ldt(0x7ffffffff000UL, 1);
    check_eq("SET_LDT with the last page below 2^47 as base -> 0 (__addr_ok: below 1<<47)",
             rc, 0);
    rc = set_ldt(0x0000800000000000UL, 1);
    check_eq("SET_LDT with a non-canonical base -> -EINVAL (MM do_mmuext_op: __addr_ok)",
             rc, -XEN_EINVAL);
    rc = set_ldt((unsigned long)ldt_tab, (1UL << 32) | 1);
    check_eq("SET_LDT reads nr_ents as 32 bits: 2^32 + 1 entries is 1 entry -> 0 "
             "(struct mmuext_op arg2.nr_ents: unsigned int)", rc, 0);
    rc = set_ldt(0, 0);
    check_eq("SET_LDT(0, 0) -> 0 (MM do_mmuext_op: no entries, no base check)", rc, 0);
    unsigned long sel;
    __asm__ __volatile__("xor %%eax, %%eax; sldt %%ax" : "=a"(sel));
    check_eqx("sldt with no LDT -> 0 (load_LDT: lldt(0))", sel, 0);
}

static void ldt_lazy(void)
{
    unsigned long out[10], n;
    long rc;

    memset(ldt_tab, 0, sizeof(ldt_tab));
    ldt_tab[0][0] = DATA3(BLOB_VA + 8);         /* %fs:0 reads ldt_u_magic */
    ldt_tab[0][1] = CODE32_3;
    ldt_tab[0][2] = DATA0(BLOB_VA);             /* DPL 0: fixed up on validation */
    ldt_tab[0][3] = CODE64_3;
    ldt_tab[1][0] = DATA3(BLOB_VA);             /* the second page's first entry */
    rc = set_ldt((unsigned long)ldt_tab, 4);
    check_eq("SET_LDT(ldt, 4) of a page the kernel still maps writable -> 0 (MM "
             "do_mmuext_op takes no reference: pages are mapped on first use)", rc, 0);
    unsigned long sel;
    __asm__ __volatile__("xor %%eax, %%eax; sldt %%ax" : "=a"(sel));
    check_eqx("sldt with an LDT loaded -> LDT_SELECTOR 0xe050 (load_LDT; asm/desc.h)",
              sel, LDT_SELECTOR);
    rc = set_page_ro(ldt_tab[0], 0);
    check_eq("the LDT's page maps writable again before its first use -> 0 (MM "
             "get_page_from_l1e: no type yet)", rc, 0);

    n = user_fs(SEL(0), out);
    if (!check(n == 1, "the LDT user-mode runs reach user mode (do_iret)", "%lu entries", n))
        return;
    check(fs_fault(out, n, 14, PFEC_USER) && cr2() == (unsigned long)ldt_tab,
          /* TR handle_ldt_mapping_fault: pv_map_ldt_shadow_page's get_page_type(
           * PGT_seg_desc_page) fails, pv_inject_page_fault(ec, ldt_base + offset);
           * pv/traps.c pv_inject_event sets PFEC_user_mode in user mode */
          "a user-mode load of %fs through an LDT page the kernel maps writable -> #PF, "
          "CR2 = ldt_base + index*8, error code 4 (TR handle_ldt_mapping_fault, "
          "pv_inject_event)",
          "vector %lu error 0x%lx rip +%lu cr2 0x%lx", out[0], out[1], out[2], cr2());

    rc = set_page_ro(ldt_tab[0], 1);
    check_eq("the LDT page mapped read-only -> 0 (MM mod_l1_entry)", rc, 0);
    n = user_fs(SEL(0), out);
    check(n == 1 && out[0] == 0x21 && out[4] == magic,
          "then the same load maps the page and %fs:0 reads at the LDT descriptor's base "
          "(pv_map_ldt_shadow_page; SDM MOV to Sreg: TI=1 reads the LDT)",
          "vector 0x%lx rbx 0x%lx", out[0], out[4]);
    n = urun(ldt_u_sldt, 0, FLAT_RING3_CS64, FLAT_RING3_SS32, out);
    check(n == 1 && out[0] == 0x21 && out[4] == LDT_SELECTOR,
          "sldt in user mode -> 0xe050 (Xen sets no CR4.UMIP for a PV guest)",
          "vector 0x%lx rbx 0x%lx", out[0], out[4]);
}

static void ldt_in_use(void)
{
    unsigned long out[10], n, cr3;
    long rc;

    rc = set_page_ro(ldt_tab[0], 0);
    check_eq("update_va_mapping mapping writable a page the LDT maps -> -EBUSY (MM "
             "get_page_from_l1e: could_not_pin; the page is PGT_seg_desc_page while mapped)",
             rc, -XEN_EBUSY);
    struct mmuext_op pin = { MMUEXT_PIN_L1_TABLE, 0, virt_to_mfn(ldt_tab[0]), 0 };
    unsigned done = 0;
    rc = HYPERVISOR_mmuext_op(&pin, 1, &done, DOMID_SELF);
    check_eq("pin L1 of a page the LDT maps -> -EINVAL (MM _get_page_type: Bad type)",
             rc, -XEN_EINVAL);
    rc = set_ldt((unsigned long)ldt_tab, 4);
    check(rc == 0 && set_page_ro(ldt_tab[0], 0) == -XEN_EBUSY,
          "SET_LDT of the same base and count again keeps the mapping (MM do_mmuext_op: "
          "no pv_destroy_ldt when ldt_base and ldt_ents are unchanged)", "rc %ld", rc);
    __asm__ __volatile__("mov %%cr3, %0" : "=r"(cr3));
    struct mmuext_op nb = { MMUEXT_NEW_BASEPTR, 0, cr3 >> 12, 0 };
    rc = HYPERVISOR_mmuext_op(&nb, 1, &done, DOMID_SELF);
    check(rc == 0 && set_page_ro(ldt_tab[0], 0) == -XEN_EBUSY,
          "NEW_BASEPTR of the root in use keeps the mapping (MM new_guest_cr3: the same mfn "
          "only reloads CR3)", "rc %ld", rc);

    check_eqx("the first use validated the page: its DPL 0 data descriptor reads back "
              "with DPL 3 (DT validate_segdesc_page stores check_descriptor's fix-ups)",
              ((volatile uint64_t *)ldt_tab[0])[2] & DPL_MASK, DPL_MASK);
    n = user_fs(SEL(2), out);
    check(n == 1 && out[0] == 0x21 && out[4] == SEL(2),
          "and user mode loads it (SDM MOV to Sreg: DPL 3 >= CPL)", "vector 0x%lx rbx 0x%lx",
          out[0], out[4]);

    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&ldt_tab[0][0]), DATA3(BLOB_VA));
    check_eq("update_descriptor into a page the LDT maps -> 0 (DT do_update_descriptor: "
             "a PGT_seg_desc_page may be written)", rc, 0);
    n = user_fs(SEL(0), out);
    check(n == 1 && out[0] == 0x21 && out[4] == SEL(0),
          "the next load through that entry takes the new base (SDM MOV to Sreg: the "
          "descriptor is read at each load)", "vector 0x%lx rbx 0x%lx",
          out[0], out[4]);

    /* the CPU sets a descriptor's accessed bit through Xen's mapping, which
     * pv_map_ldt_shadow_page makes writable (l1e_add_flags(gl1e, _PAGE_RW)) */
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&ldt_tab[0][3]),
                                      DESC(BLOB_VA, 0xfffff, 0xf2, 0xc));
    n = user_fs(SEL(3), out);
    check(rc == 0 && n == 1 && out[0] == 0x21 &&
              (((volatile uint64_t *)ldt_tab[0])[3] & (1UL << 40)),
          "a load through a descriptor without the accessed bit sets it in the guest's "
          "page (pv/mm.c pv_map_ldt_shadow_page maps it _PAGE_RW)", "rc %ld vector 0x%lx "
          "desc 0x%lx", rc, out[0], ((volatile uint64_t *)ldt_tab[0])[3]);
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&ldt_tab[0][3]), CODE64_3);

    /* no LDT paging since 4.14 (ca58e7b080): the kernel's only mapping of the
     * page may go, the LDT's mapping holds its own reference */
    uint64_t pte = lookup_pte((unsigned long)ldt_tab[0]);
    long rc2;
    rc = HYPERVISOR_update_va_mapping((unsigned long)ldt_tab[0], 0, UVMF_INVLPG | UVMF_LOCAL);
    n = user_fs(SEL(0), out);
    rc2 = HYPERVISOR_update_va_mapping((unsigned long)ldt_tab[0], pte,
                                       UVMF_INVLPG | UVMF_LOCAL);
    check(rc == 0 && rc2 == 0 && n == 1 && out[0] == 0x21 && out[4] == SEL(0),
          "with the kernel's mapping of the LDT page removed the LDT still loads (MM "
          "put_page_from_l1e: no shadow-LDT flush since 4.14)",
          "rc %ld/%ld vector 0x%lx rbx 0x%lx", rc, rc2, out[0], out[4]);

    n = user_fs(SEL(4), out);
    check(fs_fault(out, n, 13, SEL(4) & ~3UL),
          "a selector beyond nr_ents (4) -> #GP(selector & ~3) (load_LDT: the limit is "
          "ents*8-1; SDM MOV to Sreg; TR do_general_protection passes it on)",
          "vector %lu error 0x%lx rip +%lu", out[0], out[1], out[2]);
}

static void ldt_code(void)
{
    unsigned long out[10], n;
    long rc;

    n = urun(ldt_u_ljmp, SEL(1), FLAT_RING3_CS64, FLAT_RING3_SS32, out);
    check(n == 1 && out[0] == 0x21 && out[4] == 0xffffffffUL && CS_SEL(out[5]) == SEL(1),
          "ljmp from 64-bit user code to an LDT 32-bit code selector runs compatibility "
          "mode, frame CS 0x000f (SDM JMP far: the LDT descriptor's D and L bits)",
          "vector 0x%lx rbx 0x%lx cs 0x%lx", out[0], out[4], out[5]);

    /* a new table: the mappings go, so the iret below maps the page itself */
    rc = set_ldt((unsigned long)ldt_tab, 2) | set_ldt((unsigned long)ldt_tab, 4);
    check(rc == 0 && set_page_ro(ldt_tab[0], 0) == 0 && set_page_ro(ldt_tab[0], 1) == 0,
          "SET_LDT of another count drops the mappings: the page maps writable again (DT "
          "pv_destroy_ldt: put_page_and_type)", "rc %ld", rc);
    n = urun(ldt_u_mode, 0, SEL(1), FLAT_RING3_SS32, out);
    check(n == 1 && out[0] == 0x21 && out[4] == 0xffffffffUL && CS_SEL(out[5]) == SEL(1),
          "HYPERVISOR_iret to an LDT 32-bit code selector, its page not yet mapped -> "
          "compatibility mode, frame CS 0x000f (do_iret loads cs | 3; the IRETQ's fault in "
          "the LDT area maps it: TR handle_ldt_mapping_fault)",
          "vector 0x%lx rbx 0x%lx cs 0x%lx", out[0], out[4], out[5]);
    n = urun(ldt_u_mode, 0, SEL(3), FLAT_RING3_SS32, out);
    check(n == 1 && out[0] == 0x21 && out[4] == 0 && CS_SEL(out[5]) == SEL(3),
          "HYPERVISOR_iret to an LDT 64-bit code selector -> 64-bit mode, frame CS 0x001f "
          "(SDM IRET: the L bit)",
          "vector 0x%lx rbx 0x%lx cs 0x%lx", out[0], out[4], out[5]);
    n = urun(ldt_u_ss, 0, FLAT_RING3_CS64, SEL(0), out);
    check(n == 1 && out[0] == 0x21 && out[4] == SEL(0) && out[6] == SEL(0),
          "HYPERVISOR_iret with an LDT data selector as SS -> user mode reads %ss = 0x0007, "
          "frame SS 0x0007 (do_iret loads ss | 3; create_bounce_frame pushes it)", "vector 0x%lx rbx 0x%lx ss 0x%lx", out[0], out[4], out[6]);

    unsigned long v;
    __asm__ __volatile__("mov %1, %%fs; xor %%eax, %%eax; mov %%fs, %%eax"
                         : "=a"(v) : "r"(SEL(0)));
    check_eqx("the kernel loads an LDT selector into %fs too (SDM MOV to Sreg: the kernel "
              "runs in ring 3, DPL 3)",
              v, (unsigned long)SEL(0));
}

static void ldt_faults(void)
{
    unsigned long out[10], n;
    long rc;

    /* the second page: mapped on its own first use */
    rc = set_ldt((unsigned long)ldt_tab, 1024);
    n = user_fs(SEL(512), out);
    check(rc == 0 && fs_fault(out, n, 14, PFEC_USER) &&
              cr2() == (unsigned long)ldt_tab[1],
          "an LDT of two pages: a selector in the second, which the kernel maps writable -> "
          "#PF at ldt_base + 0x1000 (TR handle_ldt_mapping_fault maps the faulting page "
          "only)",
          "rc %ld vector %lu error 0x%lx cr2 0x%lx", rc, out[0], out[1], cr2());
    n = user_fs(SEL(0), out);
    check(n == 1 && out[0] == 0x21 && out[4] == SEL(0),
          "while a selector in the first page still loads (pv/mm.c pv_map_ldt_shadow_page)",
          "vector 0x%lx rbx 0x%lx",
          out[0], out[4]);
    set_page_ro(ldt_tab[1], 1);
    n = user_fs(SEL(512), out);
    check(n == 1 && out[0] == 0x21 && out[4] == SEL(512),
          "the second page read-only: the selector loads (pv/mm.c pv_map_ldt_shadow_page)",
          "vector 0x%lx rbx 0x%lx",
          out[0], out[4]);

    /* a bad descriptor anywhere in the page fails the page */
    rc = set_ldt(0, 0);
    rc |= set_page_ro(ldt_tab[0], 0);
    check_eq("SET_LDT(0, 0) drops the mappings: the first page maps writable again -> 0 "
             "(DT pv_destroy_ldt)", rc, 0);
    ldt_tab[0][5] = DESC_TSS;
    set_page_ro(ldt_tab[0], 1);
    rc = set_ldt((unsigned long)ldt_tab, 4);
    n = user_fs(SEL(0), out);
    check(rc == 0 && fs_fault(out, n, 14, PFEC_USER) && cr2() == (unsigned long)ldt_tab,
          "an LDT page holding a present TSS descriptor (past nr_ents) -> #PF at ldt_base "
          "(DT validate_segdesc_page checks all 512; check_descriptor refuses a TSS)",
          "rc %ld vector %lu error 0x%lx cr2 0x%lx", rc, out[0], out[1], cr2());
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&ldt_tab[0][5]), 0);
    n = user_fs(SEL(0), out);
    check(rc == 0 && n == 1 && out[0] == 0x21,
          "the TSS descriptor cleared by update_descriptor: the load maps the page (DT "
          "validate_segdesc_page)",
          "rc %ld vector 0x%lx", rc, out[0]);

    /* a page that is not present, and an LDT running into non-canonical space */
    rc = set_ldt(0x7ffffffff000UL, 1024);
    n = user_fs(SEL(0), out);
    check(rc == 0 && fs_fault(out, n, 14, PFEC_USER) && cr2() == 0x7ffffffff000UL,
          "an LDT page not present in the kernel's page tables -> #PF at its address (pv/mm.c "
          "pv_map_ldt_shadow_page: guest_get_eff_kern_l1e not present)",
          "rc %ld vector %lu error 0x%lx cr2 0x%lx", rc, out[0], out[1], cr2());
    n = user_fs(SEL(512), out);
    check(fs_fault(out, n, 13, 0x1004),
          "a selector whose descriptor would lie at 2^47 -> #GP(offset | TI) = #GP(0x1004) "
          "(TR handle_ldt_mapping_fault: non-canonical ldt_base + offset)",
          "vector %lu error 0x%lx rip +%lu", out[0], out[1], out[2]);

    rc = set_ldt(0, 0);
    n = user_fs(SEL(0), out);
    check(rc == 0 && fs_fault(out, n, 13, 4),
          "after SET_LDT(0, 0) an LDT selector -> #GP(0x0004) (load_LDT: lldt(0), a null LDT)",
          "rc %ld vector %lu error 0x%lx rip +%lu", rc, out[0], out[1], out[2]);
}

void checks_ldt(void)
{
    section("rules: the LDT (mm.c MMUEXT_SET_LDT, pv/mm.c pv_map_ldt_shadow_page, "
            "traps.c@stable-4.17)");
    static const struct trap_info table[] = {
        { 0x21, 3, FLAT_KERNEL_CS64, (unsigned long)xen_trap_33 }, { 0, 0, 0, 0 } };
    HYPERVISOR_set_trap_table(table);
    uint32_t lo, hi;
    __asm__ __volatile__("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0xc0000100U));
    unsigned long fs0 = ((unsigned long)hi << 32) | lo;

    ldt_args();
    ldt_lazy();
    ldt_in_use();
    ldt_code();
    ldt_faults();

    /* leave no LDT, the pages writable, a null %fs with the FS base it had */
    set_ldt(0, 0);
    set_page_ro(ldt_tab[0], 0);
    set_page_ro(ldt_tab[1], 0);
    __asm__ __volatile__("mov %0, %%fs" :: "r"(0UL));
    HYPERVISOR_set_segment_base(SEGBASE_FS, fs0);
}
