//! Writing cpio archives in the "newc" format (`070701`), the one Linux unpacks as its
//! initramfs. Archives may be concatenated: the kernel unpacks one after the other, later
//! entries replacing earlier ones.

use std::collections::BTreeSet;

/// File type bits of `mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// A newc archive being built in memory. Every entry is owned by root with mtime 0, so
/// the same contents always give the same bytes. Parent directories are added (mode 0755)
/// before their first entry, as the kernel creates nothing on its own.
#[derive(Default)]
pub struct Archive {
    data: Vec<u8>,
    next_ino: u32,
    dirs: BTreeSet<String>,
    names: BTreeSet<String>,
}

/// One entry read back from an archive (for checks and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170_000 == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & 0o170_000 == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & 0o170_000 == S_IFLNK
    }
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/').trim_end_matches('/').to_string()
}

impl Archive {
    pub fn new() -> Self {
        Self { next_ino: 1, ..Self::default() }
    }

    fn parents(&mut self, name: &str) {
        let mut prefix = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.dirs.contains(&prefix) {
                let dir = prefix.clone();
                self.entry(&dir, S_IFDIR | 0o755, (0, 0), &[]);
            }
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        assert!(!name.is_empty() && !name.split('/').any(|p| p.is_empty() || p == ".."));
        assert!(self.names.insert(name.to_string()), "{name} is in the archive twice");
        if mode & 0o170_000 == S_IFDIR {
            self.dirs.insert(name.to_string());
        }
        let nlink = if mode & 0o170_000 == S_IFDIR { 2 } else { 1 };
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("initramfs files are under 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short names"),
            0, // check
        ];
        self.next_ino += 1;
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    /// Whether `path` was added (explicitly or as a parent).
    pub fn contains(&self, path: &str) -> bool {
        self.names.contains(&clean(path))
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, path: &str, perm: u32) {
        let name = clean(path);
        if self.dirs.contains(&name) {
            return;
        }
        self.parents(&name);
        self.entry(&name, S_IFDIR | perm, (0, 0), &[]);
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        let name = clean(path);
        self.parents(&name);
        self.entry(&name, S_IFREG | perm, (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let name = clean(path);
        self.parents(&name);
        self.entry(&name, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        let name = clean(path);
        self.parents(&name);
        self.entry(&name, S_IFCHR | perm, (major, minor), &[]);
    }

    /// The archive's bytes, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

/// Reads every entry of one or more concatenated newc archives (zero padding between
/// archives is skipped). Trailers are not returned.
pub fn read(mut data: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let field = |header: &[u8], i: usize| -> Result<u32, String> {
        let text =
            std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).map_err(|e| e.to_string())?;
        u32::from_str_radix(text, 16).map_err(|e| format!("bad header field {text:?}: {e}"))
    };
    let padded = |n: usize| n.div_ceil(4) * 4;
    loop {
        while data.first() == Some(&0) {
            data = &data[1..];
        }
        if data.is_empty() {
            return Ok(entries);
        }
        if data.len() < 110 || &data[..6] != b"070701" {
            return Err("not a newc cpio header".into());
        }
        let (mode, size, namesize) = (field(data, 1)?, field(data, 6)?, field(data, 11)?);
        let rdev = (field(data, 9)?, field(data, 10)?);
        let name_end = 110 + namesize as usize;
        let data_start = padded(name_end);
        let data_end = data_start + size as usize;
        if data.len() < data_end || namesize == 0 {
            return Err("truncated archive".into());
        }
        let name = String::from_utf8_lossy(&data[110..name_end - 1]).into_owned();
        let body = data[data_start..data_end].to_vec();
        data = &data[padded(data_end).min(data.len())..];
        if name != "TRAILER!!!" {
            entries.push(Entry { name, mode, rdev, data: body });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut a = Archive::new();
        a.file("/bin/busybox", 0o755, b"\x7fELF...");
        a.symlink("bin/sh", "busybox");
        a.char_dev("dev/console", 0o600, 5, 1);
        a.dir("root/.ssh", 0o700);
        a.file("root/.ssh/authorized_keys", 0o600, b"ssh-ed25519 AAAA x\n");
        assert!(a.contains("/bin") && a.contains("bin/busybox") && !a.contains("etc"));
        let bytes = a.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(&bytes[..6], b"070701");
        let entries = read(&bytes).expect("reads back");
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "root",
                "root/.ssh",
                "root/.ssh/authorized_keys"
            ]
        );
        assert!(entries[0].is_dir() && entries[1].is_file() && entries[2].is_symlink());
        assert_eq!(entries[1].data, b"\x7fELF...");
        assert_eq!(entries[2].data, b"busybox");
        assert_eq!(entries[4].rdev, (5, 1));
        assert_eq!(entries[6].mode, 0o040_700);
        assert_eq!(entries[7].mode, 0o100_600);
    }

    #[test]
    fn concatenated_archives() {
        let mut a = Archive::new();
        a.file("init", 0o755, b"#!/bin/sh\n");
        let mut b = Archive::new();
        b.file("cmd.sh", 0o755, b"uname -a\n");
        let mut both = a.finish();
        both.extend_from_slice(&[0; 8]);
        both.extend(b.finish());
        let names: Vec<String> = read(&both).expect("reads").into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["init", "cmd.sh"]);
    }

    #[test]
    #[should_panic(expected = "twice")]
    fn duplicates_are_refused() {
        let mut a = Archive::new();
        a.file("etc/passwd", 0o644, b"");
        a.file("etc/passwd", 0o644, b"");
    }
}
