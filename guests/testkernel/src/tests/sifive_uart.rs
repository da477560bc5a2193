//! The SiFive UART (`sifive,uart0`) at 0x1001_0000 of QEMU's `sifive_u` (PLIC source 4):
//! register widths, what reads back, the watermarks in `ip`, an empty receiver, and the
//! interrupt line as the PLIC sees it. Skipped where the machine has none (`virt`).
//!
//! Natively this is OpenSBI's console: each test restores what it changed before it
//! returns (outside the tests, output goes through the SBI console, which only writes
//! `txdata`). `txdata` is never read: whether QEMU's FIFO is full then depends on timing.

use rv::trap::{Cause, Exception};

use crate::harness::TestResult;
use crate::harness::{Outcome, Test};
use crate::plic;
use crate::trap::catch;
use crate::{check_eq, observe, test};

pub const TESTS: &[Test] = &[
    test!("sifive-uart/registers", registers),
    test!("sifive-uart/access-widths", access_widths),
    test!("sifive-uart/rx-empty", rx_empty),
    test!("sifive-uart/watermarks", watermarks),
    test!("sifive-uart/plic-line", plic_line),
];

const BASE: u64 = 0x1001_0000;
const IRQ: u32 = 4;
const RXDATA: u64 = 0x04;
const TXCTRL: u64 = 0x08;
const RXCTRL: u64 = 0x0c;
const IE: u64 = 0x10;
const IP: u64 = 0x14;
const DIV: u64 = 0x18;

fn require() -> Result<(), Outcome> {
    crate::machine::require_device("sifive,uart0", BASE)
}

fn read(reg: u64) -> u32 {
    // SAFETY: a register of the UART the device tree lists (checked by `require`); 32 bits.
    unsafe { ((BASE + reg) as *const u32).read_volatile() }
}

fn write(reg: u64, value: u32) {
    // SAFETY: as in `read`; the tests restore what they change.
    unsafe { ((BASE + reg) as *mut u32).write_volatile(value) }
}

/// The control registers as a test found them; dropping it restores them.
struct Saved([u32; 4]);

impl Saved {
    fn take() -> Self {
        Self([TXCTRL, RXCTRL, IE, DIV].map(read))
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        for (reg, value) in [TXCTRL, RXCTRL, IE, DIV].into_iter().zip(self.0) {
            write(reg, value);
        }
    }
}

fn registers() -> TestResult {
    require()?;
    // As the firmware left them (the boot loader's setup is part of the machine a kernel
    // finds).
    let initial = [TXCTRL, RXCTRL, IE, DIV].map(read);
    observe!("initial-txctrl", initial[0]);
    observe!("initial-rxctrl", initial[1]);
    observe!("initial-ie", initial[2]);
    observe!("initial-div", initial[3]);
    let seen = {
        let _saved = Saved::take();
        let mut seen = [0u32; 3];
        for (i, reg) in [TXCTRL, RXCTRL, DIV].into_iter().enumerate() {
            write(reg, 0xdead_beef);
            seen[i] = read(reg);
        }
        seen
    };
    observe!("txctrl", seen[0]);
    observe!("rxctrl", seen[1]);
    observe!("div", seen[2]);
    Ok(())
}

fn access_widths() -> TestResult {
    require()?;
    // SAFETY: loads of the UART's registers at widths it may refuse: faults are caught.
    let byte = catch(|| unsafe { ((BASE + DIV) as *const u8).read_volatile() });
    // SAFETY: as above.
    let double = catch(|| unsafe { ((BASE + TXCTRL) as *const u64).read_volatile() });
    // SAFETY: as above: past the registers QEMU decodes.
    let past = catch(|| unsafe { ((BASE + 0x20) as *const u32).read_volatile() });
    for (name, r) in
        [("byte", byte.map(u64::from)), ("double", double), ("past", past.map(u64::from))]
    {
        match r {
            Ok(v) => crate::harness::observe(&alloc::format!("{name}-value"), v),
            Err(t) => {
                crate::harness::observe(&alloc::format!("{name}-scause"), t.scause);
                if t.cause() == Cause::Exception(Exception::LoadAccessFault) {
                    crate::harness::observe(&alloc::format!("{name}-stval"), t.stval);
                }
            }
        }
    }
    Ok(())
}

fn rx_empty() -> TestResult {
    require()?;
    // Nobody types during the suite: the receiver is empty.
    check_eq!(read(RXDATA), 0x8000_0000);
    check_eq!(read(IP) & 2, 0);
    Ok(())
}

fn watermarks() -> TestResult {
    require()?;
    let ip = {
        let _saved = Saved::take();
        let mut ip = [0u32; 4];
        for (i, (tx, rx)) in
            [(0, 0), (1 << 16, 0), (7 << 16, 7 << 16), (0, 1 << 16)].into_iter().enumerate()
        {
            write(TXCTRL, 1 | tx);
            write(RXCTRL, 1 | rx);
            ip[i] = read(IP);
        }
        ip
    };
    for (i, v) in ip.iter().enumerate() {
        crate::harness::observe(&alloc::format!("ip{i}"), u64::from(*v));
    }
    // txwm while the watermark is not 0 (the FIFO is below it), never rxwm: nothing waits.
    check_eq!(ip, [0, 1, 1, 0]);
    Ok(())
}

fn plic_line() -> TestResult {
    require()?;
    let _plic = plic::Saved::take(&[IRQ]);
    let pending = {
        let _saved = Saved::take();
        plic::take_over(IRQ);
        // ie.txwm drives the line high (whatever the watermark); the PLIC latches it.
        write(IE, 1);
        let raised = plic::pending(IRQ);
        write(IE, 0);
        let source = plic::claim();
        plic::complete(source);
        let after = plic::pending(IRQ);
        (raised, source, after)
    };
    observe!("raised", pending.0);
    observe!("claimed", pending.1);
    observe!("pending-after-claim", pending.2);
    check_eq!(pending, (true, IRQ, false));
    Ok(())
}
