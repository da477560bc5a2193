//! Scheduling vCPUs on harts: pure logic, tested on the host.
//!
//! * [`state`]: each vCPU's state machine (created, runnable, running, blocked in `wfi`,
//!   stopped by HSM, suspended, off), with checked transitions that other harts may make
//!   concurrently (a wake-up, an HSM start);
//! * [`place`]: which hart each vCPU runs on — one per hart while harts suffice, shared
//!   evenly (and within each guest's hart affinity) when vCPUs outnumber harts;
//! * [`queue`]: a hart's run queue: round robin over its runnable vCPUs, a time slice each
//!   when several want the hart;
//! * [`mailbox`]: what one hart asks of a vCPU that another hart runs (a software
//!   interrupt, a TLB fence), and how the asker waits for a fence to be done.
#![no_std]

extern crate alloc;

pub mod mailbox;
pub mod place;
pub mod queue;
pub mod state;

/// A vCPU, by guest and index within the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VcpuId {
    pub guest: usize,
    pub vcpu: usize,
}
