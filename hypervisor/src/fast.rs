//! The real hart under the fast path ([`vcpu::fast`]): the trap vector calls
//! [`fast_exit`] with the guest's registers saved, on hypocaust's stack, before the run
//! loop would see the exit (docs/trap-path.md, "The fast path").

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, Ordering};

use rv::csr::{ExtState, SSTATUS_FS_SHIFT};
use vcpu::fast::MIRRORED;
use vcpu::{FastHart, Lines, Privilege, Vcpu};

use crate::arch::trap::GuestContext;
use crate::paging::{self, CodePage};
use crate::{arch, run, timer};

/// The hart the vCPU of a [`GuestContext`] runs on.
struct RealHart {
    /// The vCPU's code pages (`paging::VcpuMmu::code_pages`).
    code: *const CodePage,
    /// The vCPU's external interrupt line.
    external: *const AtomicBool,
    slice_end: u64,
    /// The code page of the last fetch, for the next in the same page: its address and
    /// privilege (`va_page | user`), and its direct-map address (0: none).
    last: Cell<(u64, u64)>,
}

impl FastHart for RealHart {
    fn lines(&self) -> Lines {
        // SAFETY: the line, if any, lives in the guest, which outlives its vCPUs' runs.
        let external = unsafe { self.external.as_ref() }.is_some_and(|l| l.load(Ordering::Acquire));
        Lines { now: arch::time(), external }
    }

    fn fetch(&self, v: &Vcpu, pc: u64) -> Option<u32> {
        // `satp` does not change within a fast exit; the privilege may.
        let user = v.privilege == Privilege::User;
        let key = pc & !0xfff | u64::from(user);
        let (last, host) = self.last.get();
        if key == last {
            return paging::read_code(host, pc, true);
        }
        // SAFETY: the run loop pointed `code` at the vCPU's code pages, which nothing
        // changes while the guest runs.
        let code = unsafe { &*self.code.cast::<[CodePage; paging::CODE_PAGES]>() };
        let host = paging::cached_code_page(code, pc, v.csrs.satp, user)?.host;
        self.last.set((key, host));
        paging::read_code(host, pc, true)
    }

    fn fs_dirty(&self) -> bool {
        (arch::csr::sstatus() >> SSTATUS_FS_SHIFT) & 3 == ExtState::Dirty as u64
    }

    fn mirror_status(&mut self, sstatus: u64) {
        arch::csr::set_sstatus_bits(MIRRORED.bits(), sstatus);
    }

    fn switch_tree(&mut self, satp: u64) -> u64 {
        let left = arch::csr::satp();
        // SAFETY: every shadow tree maps hypocaust as its own table does, and the run loop
        // named this one cached with its own ASID (no flush needed).
        unsafe { arch::switch_page_table_keep_tlb(satp) };
        left
    }

    fn set_scounteren(&mut self, value: u64) {
        arch::csr::set_scounteren(value);
    }

    fn arm_timer(&mut self, stimecmp: u64) {
        timer::arm(run::wanted_timer(stimecmp, arch::time()).min(self.slice_end));
    }
}

/// The fast path's entry from the trap vector: a [`vcpu::FastExit`] as a `u64`.
pub extern "C" fn fast_exit(ctx: &mut GuestContext) -> u64 {
    let (scause, _) = arch::csr::trap_cause();
    let mut hart = RealHart {
        code: ctx.code_pages as *const CodePage,
        external: ctx.external as *const AtomicBool,
        slice_end: ctx.slice_end,
        last: Cell::new((u64::MAX, 0)),
    };
    ctx.vcpu.fast_exit(&mut ctx.fast, scause, &mut hart) as u64
}
