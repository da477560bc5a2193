//! What a vCPU needs from hypocaust while it handles an exit: time, guest memory, the
//! console, the other vCPUs of its guest. Tests implement it with plain data.

use rv::GuestPhysAddr;
use rv::insn::Width;
use rv::trap::Exception;

use crate::Vcpu;
use crate::mmio::Direction;
use crate::vcpu::HartState;
use crate::window::Atomic;

/// A TLB or instruction-cache fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// `fence.i`: make stores visible to instruction fetch.
    I,
    /// `sfence.vma`: drop translations of `[start, start + size)` (`size == u64::MAX`:
    /// all addresses), of `asid` only if given.
    Vma { start: u64, size: u64, asid: Option<u16> },
}

/// Identity of the physical machine, passed through SBI BASE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineIds {
    pub mvendorid: u64,
    pub marchid: u64,
    pub mimpid: u64,
}

/// An exception and its `stval`.
pub type Fault = (Exception, u64);

/// Services hypocaust provides to a vCPU.
pub trait Host {
    /// The current value of `time`.
    fn now(&self) -> u64;

    /// Whether the external interrupt line of vCPU `hart` is asserted.
    fn external_irq(&self, hart: usize) -> bool {
        let _ = hart;
        false
    }

    /// Fetches the instruction at guest-virtual `pc` (when the hart did not report its bits
    /// in `stval`): the 16 or 32 bits, or the fault an instruction fetch would take.
    fn fetch_instruction(&mut self, vcpu: &Vcpu, pc: u64) -> Result<u32, Fault>;

    /// Whether guest-virtual `va` lies in hypocaust's window, where every access of the
    /// vCPU faults to hypocaust whatever the guest maps (see `window.rs`). Default: no
    /// window.
    fn in_window(&self, vcpu: &Vcpu, va: u64) -> bool {
        let _ = (vcpu, va);
        false
    }

    /// Runs the 32-bit instruction `insn` on the hart, in S-mode, with the guest's FP
    /// registers and `fcsr` live and `t0 = a`, `t1 = b`: the value of `t2` afterwards, or
    /// `None` if it trapped (the hart does not have it). The caller renamed its integer
    /// registers to `t0`, `t1`, `t2` and allows only instructions without memory accesses
    /// or privileged effects (`window.rs`). Default: the host cannot.
    fn run_out_of_line(&mut self, insn: u32, a: u64, b: u64) -> Option<u64> {
        let _ = (insn, a, b);
        None
    }

    /// Loads a doubleword from guest-virtual `va` with the vCPU's current translation and
    /// privilege, as firmware does for pointers passed to legacy SBI calls.
    fn load_u64(&mut self, vcpu: &Vcpu, va: u64) -> Result<u64, Fault>;

    /// Translates guest-virtual `va` for a load or store by the vCPU, as its hart would
    /// (its translation at its privilege, A/D bits set): the guest-physical address, or
    /// the fault the access takes.
    fn translate(&mut self, vcpu: &Vcpu, va: u64, dir: Direction) -> Result<GuestPhysAddr, Fault>;

    /// An atomic read-modify-write of the aligned word or doubleword of guest RAM at
    /// `gpa`: the old value (zero-extended), or `None` unless it is RAM.
    fn atomic_phys(&mut self, gpa: GuestPhysAddr, width: Width, op: Atomic) -> Option<u64>;

    /// Copies guest-physical memory at `gpa` into `buf`; `false` (nothing copied) unless all
    /// of it is guest RAM.
    fn read_phys(&mut self, gpa: GuestPhysAddr, buf: &mut [u8]) -> bool;

    /// Copies `data` to guest-physical memory at `gpa`; `false` (nothing written) unless all
    /// of it is guest RAM.
    fn write_phys(&mut self, gpa: GuestPhysAddr, data: &[u8]) -> bool;

    /// Reads a device register at guest-physical `gpa`; `None` if the bus refuses (no
    /// device there, or one that does not decode the access).
    fn mmio_read(&mut self, gpa: GuestPhysAddr, width: Width) -> Option<u64>;

    /// Writes a device register; `false` if the bus refuses.
    fn mmio_write(&mut self, gpa: GuestPhysAddr, width: Width, value: u64) -> bool;

    /// The guest's FP register `reg` (the guest's FP state lives in the hart), raw 64 bits.
    fn fp_read(&mut self, reg: u8) -> u64;

    /// Sets the guest's FP register `reg`.
    fn fp_write(&mut self, reg: u8, value: u64);

    /// Whether `gpa` is guest RAM (where a hart may start executing).
    fn is_ram(&self, gpa: GuestPhysAddr) -> bool;

    /// Writes guest console output.
    fn console_write(&mut self, bytes: &[u8]);

    /// Reads pending console input into `buf` without waiting; returns the count.
    fn console_read(&mut self, buf: &mut [u8]) -> usize;

    /// The physical machine's identity.
    fn machine_ids(&self) -> MachineIds;

    /// Number of vCPUs of the guest; their hart IDs are `0..hart_count()`.
    fn hart_count(&self) -> usize;

    /// HSM state of another vCPU of the guest.
    fn hart_state(&self, hart: usize) -> HartState;

    /// Starts stopped vCPU `hart` at `start` in S-mode with a1 = `opaque`; `false` if it
    /// is no longer stopped (another vCPU started it first).
    fn hart_start(&mut self, hart: usize, start: GuestPhysAddr, opaque: u64) -> bool;

    /// Makes SSIP pending on the other vCPUs of the guest in `harts` (bit `i`: vCPU `i`;
    /// never the caller's own bit).
    fn send_ipi(&mut self, harts: u64);

    /// Performs `fence` for the calling vCPU.
    fn fence(&mut self, vcpu: &Vcpu, fence: Fence);

    /// Performs `fence` on the other vCPUs of the guest in `harts` (as for
    /// [`Host::send_ipi`]); when it returns, none of them can use what the fence drops.
    fn remote_fence(&mut self, harts: u64, fence: Fence);
}
