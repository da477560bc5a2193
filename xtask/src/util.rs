//! Small process helpers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of xtask/).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command with inherited stdio; fails on a non-zero exit.
pub fn run_status(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Runs a command and returns its standard output; fails on a non-zero exit.
pub fn command_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with no input and its output captured, killing it after `timeout`.
/// Fails if it cannot start or runs too long; the exit status is the caller's to judge.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = collect(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = collect(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = wait_within(&mut child, timeout, &|| ()).with_context(|| {
        format!("{cmd:?} ran longer than {} s and was stopped", timeout.as_secs())
    })?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// Waits for `child`, calling `tick` about ten times a second; kills it after `timeout`.
pub fn wait_within(child: &mut Child, timeout: Duration, tick: &dyn Fn()) -> Result<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {} s", timeout.as_secs());
        }
        tick();
        thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`output_within`], but fails on a non-zero exit (quoting the command's stderr) and
/// returns standard output as text.
pub fn text_within(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let out = output_within(cmd, timeout)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{cmd:?} failed with {}: {}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// 64-bit FNV-1a: a stable hash for cache keys (std's hasher may change between releases).
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Copies `from` to `to`, leaving holes where `from` has blocks of zeros (a fresh disk
/// image is mostly zeros).
pub fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut src =
        std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let _ = std::fs::remove_file(to);
    let mut dst =
        std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut block = vec![0u8; 64 << 10];
    let mut len = 0u64;
    loop {
        let n = src.read(&mut block)?;
        if n == 0 {
            break;
        }
        if block[..n].iter().all(|b| *b == 0) {
            dst.seek(SeekFrom::Current(n as i64))?;
        } else {
            dst.write_all(&block[..n])?;
        }
        len += n as u64;
    }
    dst.set_len(len)?;
    Ok(())
}

/// Binds an unused TCP port on 127.0.0.1 and returns its number (free again on return).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a local port")?;
    Ok(listener.local_addr()?.port())
}

/// Threads that keep CPUs busy until dropped: a loaded machine, on which every test must
/// give the same results as on an idle one (a real hart takes an interrupt whatever the
/// host is doing).
pub struct CpuHogs {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl CpuHogs {
    /// Starts `n` busy threads.
    pub fn start(n: usize) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn sparse_copies_are_equal() {
        let dir = std::env::temp_dir().join(format!("xtask-sparse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut data = vec![0u8; 300_000];
        data[70_000] = 1;
        data[299_999] = 2;
        std::fs::write(dir.join("a"), &data).expect("write");
        copy_sparse(&dir.join("a"), &dir.join("b")).expect("copies");
        assert_eq!(std::fs::read(dir.join("b")).expect("read"), data);
        std::fs::write(dir.join("z"), vec![0u8; 100_000]).expect("write");
        copy_sparse(&dir.join("z"), &dir.join("b")).expect("copies");
        assert_eq!(std::fs::read(dir.join("b")).expect("read"), vec![0u8; 100_000]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timeouts_stop_children() {
        let start = Instant::now();
        let r = output_within(Command::new("sleep").arg("10"), Duration::from_millis(300));
        assert!(r.is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
        let out = text_within(Command::new("echo").arg("hi"), Duration::from_secs(10));
        assert_eq!(out.expect("echo runs"), "hi\n");
    }
}
