//! The monitor: commands typed on the console after the escape key (console.rs) to see
//! the guests and act on one of them. docs/console.md lists the commands.

use alloc::string::String;
use core::fmt::Write;

use sched::state::VcpuState;

use crate::guest::{Guest, Phase, Request};
use crate::{console, hart, hypervisor, mm};

const HELP: &str = "\
  list               the guests: state, memory, vCPUs and the harts they run on, exits
  exits GUEST        a guest's exits by cause, per vCPU
  focus GUEST        send console input to GUEST (also: Ctrl-] then its number)
  pause GUEST        stop scheduling GUEST's vCPUs
  resume GUEST       schedule them again
  reboot GUEST       restart GUEST from its kernel, as a system reset would
  off GUEST          power GUEST off (the machine powers off with the last guest)
  help               this list
  (empty line)       back to the guest in focus
GUEST is a guest's number or name.";

/// Runs one command line; returns whether the console goes back to the guest.
pub fn execute(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or("");
    let arg = words.next();
    let target = arg.map(find);
    match (command, target) {
        ("help" | "h" | "?", _) => say(format_args!("{HELP}")),
        ("list" | "l" | "ls", _) => list(),
        (_, Some(None)) => say(format_args!("no guest {:?}; 'list' shows them", arg.unwrap_or(""))),
        ("exits", Some(Some(g))) => exits(g),
        ("focus" | "f", Some(Some(g))) => {
            console::set_focus(g.index);
            say(format_args!("input goes to guest {} '{}'", g.index, g.name));
            return true;
        }
        ("pause", Some(Some(g))) => act(g, g.set_paused(true), "paused"),
        ("resume", Some(Some(g))) => act(g, g.set_paused(false), "resumed"),
        ("reboot", Some(Some(g))) => {
            let on = g.phase() != Phase::Off;
            if on {
                println!("hypocaust: guest '{}' reboots (monitor)", g.name);
                g.set_paused(false);
                g.request(Request::Reboot);
            }
            act(g, on, "rebooting");
        }
        ("off", Some(Some(g))) => {
            let on = g.phase() != Phase::Off;
            if on {
                println!("hypocaust: guest '{}' powered off (monitor)", g.name);
                g.set_paused(false);
                g.request(Request::PowerOff);
            }
            act(g, on, "powering off");
        }
        ("exits" | "focus" | "f" | "pause" | "resume" | "reboot" | "off", None) => {
            say(format_args!("'{command}' needs a guest: its number or name"))
        }
        _ => say(format_args!("unknown command {command:?}; 'help' lists them")),
    }
    false
}

/// The guest named by number or name.
fn find(word: &str) -> Option<&'static Guest> {
    let guests = hypervisor::guests();
    match word.parse::<usize>() {
        Ok(i) => guests.get(i),
        Err(_) => guests.iter().find(|g| g.name == word),
    }
}

fn say(args: core::fmt::Arguments) {
    println!("{args}");
}

fn act(g: &Guest, done: bool, what: &str) {
    if done {
        say(format_args!("guest {} '{}': {what}", g.index, g.name));
    } else {
        say(format_args!("guest {} '{}' is off", g.index, g.name));
    }
}

fn state_name(s: VcpuState) -> &'static str {
    match s {
        VcpuState::Created => "created",
        VcpuState::Runnable => "runnable",
        VcpuState::Running => "running",
        VcpuState::Blocked => "wfi",
        VcpuState::Stopped => "stopped",
        VcpuState::Suspended => "suspended",
        VcpuState::Off => "off",
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Running => "running",
        Phase::Paused => "paused",
        Phase::Changing => "rebooting",
        Phase::Off => "off",
    }
}

/// `list`: one block per guest.
fn list() {
    for g in hypervisor::guests() {
        let focus = if console::focus() == g.index { " (input)" } else { "" };
        let exits: u64 = g.vcpus.iter().map(|c| c.exits.total()).sum();
        say(format_args!(
            "{} {:<12} {:<9} {:>5} MiB at {:#x}, {} vCPU{}, {exits} exits{focus}",
            g.index,
            g.name,
            phase_name(g.phase()),
            g.memory.size() >> 20,
            g.memory.host_base().raw(),
            g.vcpus.len(),
            if g.vcpus.len() == 1 { "" } else { "s" },
        ));
        let mut line = String::from("  ");
        for c in &g.vcpus {
            let _ = write!(
                line,
                " vcpu{} {} on hart {};",
                c.index,
                state_name(c.state.get()),
                hart::id_of(c.hart)
            );
        }
        say(format_args!("{}", line.trim_end_matches(';')));
    }
    let (free, largest) = mm::free_for_guests();
    say(format_args!(
        "host: {} harts, {} MiB free ({} MiB in one piece), {} KiB of page reserve free, {} \
         console bytes dropped",
        hart::count(),
        free >> 20,
        largest >> 20,
        mm::free_frame_bytes() >> 10,
        console::dropped()
    ));
}

/// `exits GUEST`.
fn exits(g: &Guest) {
    for c in &g.vcpus {
        let mut line = String::new();
        let _ = write!(line, "vcpu{}: {} exits", c.index, c.exits.total());
        for (cause, n) in c.exits.top(8) {
            let _ = write!(line, ", {cause:?} {n}");
        }
        say(format_args!("{line}"));
    }
}
