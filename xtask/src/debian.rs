//! Debian's riscv64 packages, fetched with the machine's own apt tools under a private
//! configuration: its own sources list (the mirror the machine's apt sources already name,
//! read at run time; a Debian suite such as `unstable`), lists, cache and status, the
//! architecture `riscv64`, and signatures checked against Debian's archive keyring. The
//! machine's apt state and configuration are never touched; only its network settings
//! (proxies, timeouts) are carried over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use crate::provision;
use crate::util::{output_within, text_within, wait_within};

/// The keyring the archive's signatures are checked with.
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Timeouts of the apt tools.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(600);
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(1800);

/// One entry of an apt sources file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suites: Vec<String>,
}

/// Binary (`deb`) entries of a one-line-style sources file (`deb [opts] URI suite comp...`).
pub fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut rest = match line.strip_prefix("deb") {
            Some(r) if r.starts_with([' ', '\t']) => r.trim_start(),
            _ => continue,
        };
        if rest.starts_with('[') {
            let Some(end) = rest.find(']') else { continue };
            rest = rest[end + 1..].trim_start();
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Source { uri: uri.to_string(), suites: vec![suite.to_string()] });
        }
    }
    out
}

/// Binary entries of a deb822-style `.sources` file (`Types:`, `URIs:`, `Suites:`,
/// `Enabled:`), one per URI.
pub fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in stanzas(text) {
        let get = |k: &str| {
            stanza.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
        };
        let words = |k: &str| -> Vec<String> {
            get(k).unwrap_or("").split_whitespace().map(str::to_string).collect()
        };
        if !words("Types").iter().any(|t| t == "deb")
            || get("Enabled").is_some_and(|e| e.trim().eq_ignore_ascii_case("no"))
        {
            continue;
        }
        for uri in words("URIs") {
            out.push(Source { uri, suites: words("Suites") });
        }
    }
    out
}

/// The fields of each stanza of a deb822 text (comment lines dropped, continuation lines
/// joined with newlines).
fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            current.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The binary sources the machine's apt sources files name.
fn machine_sources() -> Vec<Source> {
    let mut sources = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => sources.extend(parse_deb822(&text)),
            Some("list") => sources.extend(parse_one_line(&text)),
            _ => {}
        }
    }
    sources
}

/// The mirrors the machine's apt sources name, best first: those serving a plain release
/// (a suite without `-security`, `-updates`, ...) before the rest.
pub fn machine_mirrors() -> Result<Vec<String>> {
    Ok(rank_mirrors(&machine_sources()))
}

/// Every suite the machine's apt sources name.
pub fn machine_suites() -> Result<Vec<String>> {
    Ok(machine_sources().into_iter().flat_map(|s| s.suites).collect())
}

fn rank_mirrors(sources: &[Source]) -> Vec<String> {
    let plain = |s: &Source| s.suites.iter().any(|x| !x.contains(['-', '/']));
    let mut out: Vec<String> = Vec::new();
    for s in sources.iter().filter(|s| plain(s)).chain(sources.iter().filter(|s| !plain(s))) {
        let uri = s.uri.trim_end_matches('/').to_string();
        if !out.contains(&uri) {
            out.push(uri);
        }
    }
    out
}

/// One package's record in the archive index.
#[derive(Clone, Debug, Default)]
pub struct Stanza {
    pub fields: Vec<(String, String)>,
}

impl Stanza {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    /// `Pre-Depends` and `Depends`: each a list of alternatives (package names only).
    pub fn depends(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for key in ["Pre-Depends", "Depends"] {
            out.extend(parse_depends(self.get(key).unwrap_or("")));
        }
        out
    }

    /// The package as a download: name, version, size.
    pub fn package(&self) -> Result<Package> {
        let name = self.get("Package").context("a package record without Package")?;
        let version = self.get("Version").with_context(|| format!("{name} has no Version"))?;
        let size = self.get("Size").and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok(Package { name: name.into(), version: version.into(), size })
    }
}

/// Parses a dependency field: `a (>= 1), b | c:any, d [riscv64]` gives
/// `[[a], [b, c], [d]]`.
pub fn parse_depends(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.split(['(', '[', '<']).next()?.trim();
                    let name = name.split(':').next()?.trim();
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Parses `apt-cache show` output into records by package name.
pub fn parse_show(text: &str) -> BTreeMap<String, Stanza> {
    let mut out = BTreeMap::new();
    for fields in stanzas(text) {
        let stanza = Stanza { fields };
        if let Some(name) = stanza.get("Package") {
            out.entry(name.to_string()).or_insert(stanza);
        }
    }
    out
}

/// A package version to download.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Size of the .deb in bytes (from the index).
    pub size: u64,
}

impl Package {
    /// `name_version` with the version made safe for a file name (`:` becomes `%3a`, as apt
    /// does).
    pub fn file_stem(&self) -> String {
        format!("{}_{}", self.name, self.version.replace(':', "%3a"))
    }
}

/// A private apt configuration for one suite of one mirror.
pub struct Apt {
    pub dir: PathBuf,
    pub suite: String,
    pub mirror: String,
    conf: PathBuf,
}

/// The machine's network-related apt settings (proxies and the like), as config lines.
fn network_settings() -> String {
    let Ok(dump) =
        text_within(Command::new("apt-config").arg("dump").env_remove("APT_CONFIG"), QUERY_TIMEOUT)
    else {
        return String::new();
    };
    let keep = [
        "Acquire::http::",
        "Acquire::https::",
        "Acquire::ftp::",
        "Acquire::Retries ",
        "Acquire::ForceIPv4 ",
        "Acquire::ForceIPv6 ",
        "Acquire::Check-Valid-Until ",
        "Acquire::Check-Date ",
    ];
    dump.lines()
        .filter(|l| keep.iter().any(|k| l.starts_with(k)) && l.ends_with(';'))
        .map(|l| format!("{l}\n"))
        .collect()
}

impl Apt {
    /// Writes the private configuration for `suite` of `mirror` under `root/<suite>`.
    pub fn configure(root: &Path, mirror: &str, suite: &str) -> Result<Apt> {
        if !Path::new(KEYRING).exists() {
            provision::apt_install(&["debian-archive-keyring"], "Debian's archive keyring")?;
        }
        let dir = root.join(suite);
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "etc/apt.conf.d",
            "etc/sources.list.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "log",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        for stale in ["pkgcache.bin", "srcpkgcache.bin"] {
            let _ = std::fs::remove_file(dir.join("cache").join(stale));
        }
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        let sources = dir.join("etc/sources.list");
        let line = format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n");
        if std::fs::read_to_string(&sources).ok().as_deref() != Some(line.as_str()) {
            std::fs::write(&sources, line)?;
            // A new mirror: the old lists say nothing about it.
            let _ = std::fs::remove_file(dir.join("updated"));
        }
        let d = dir.display();
        let sandbox = if provision::is_root() { "APT::Sandbox::User \"root\";\n" } else { "" };
        let conf = format!(
            "// Written by cargo xtask (xtask/src/debian.rs): a private apt for Debian riscv64.\n\
             APT::Architecture \"riscv64\";\n\
             APT::Architectures {{ \"riscv64\"; }};\n\
             {sandbox}\
             Dir::Etc::Main \"{d}/etc/apt.conf\";\n\
             Dir::Etc::Parts \"{d}/etc/apt.conf.d\";\n\
             Dir::Etc::SourceList \"{d}/etc/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/etc/sources.list.d\";\n\
             Dir::Etc::Preferences \"{d}/etc/preferences\";\n\
             Dir::Etc::PreferencesParts \"{d}/etc/preferences.d\";\n\
             Dir::Etc::Trusted \"{d}/etc/trusted.gpg\";\n\
             Dir::Etc::TrustedParts \"{d}/etc/trusted.gpg.d\";\n\
             Dir::State \"{d}\";\n\
             Dir::State::Lists \"{d}/lists\";\n\
             Dir::State::status \"{d}/status\";\n\
             Dir::Cache \"{d}/cache\";\n\
             Dir::Log \"{d}/log\";\n\
             Dir::Cache::pkgcache \"\";\n\
             Dir::Cache::srcpkgcache \"\";\n\
             Acquire::GzipIndexes \"true\";\n\
             Acquire::Languages \"none\";\n\
             {}",
            network_settings()
        );
        let path = dir.join("apt.conf");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(conf.as_str()) {
            std::fs::write(&path, conf)?;
        }
        Ok(Apt { dir, suite: suite.into(), mirror: mirror.into(), conf: path })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", &self.conf).env("LC_ALL", "C").env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// How long ago the index was last refreshed (None: never).
    pub fn index_age(&self) -> Option<Duration> {
        let modified = std::fs::metadata(self.dir.join("updated")).ok()?.modified().ok()?;
        Some(SystemTime::now().duration_since(modified).unwrap_or_default())
    }

    /// `apt-get update`: fetches the suite's signed index.
    pub fn update(&self) -> Result<()> {
        let out = output_within(self.command("apt-get").args(["-q", "update"]), UPDATE_TIMEOUT)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        // apt-get update exits 0 on some fetch failures; its "E:"/"W:" lines tell.
        let failed = text.lines().any(|l| l.starts_with("E:") || l.starts_with("Err:"))
            || text.lines().any(|l| l.starts_with("W:") && l.contains("Failed to fetch"));
        if !out.status.success() || failed {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(['E', 'W']) || l.starts_with("Err"))
                .collect();
            bail!(
                "apt-get update of {} {} (riscv64) failed: {}",
                self.mirror,
                self.suite,
                lines.join(" / ")
            );
        }
        std::fs::write(self.dir.join("updated"), format!("{} {}\n", self.mirror, self.suite))?;
        Ok(())
    }

    /// The candidate records of `names` (unknown and purely virtual names are absent).
    pub fn show(&self, names: &[String]) -> Result<BTreeMap<String, Stanza>> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let out = output_within(
            self.command("apt-cache").args(["show", "--no-all-versions"]).args(names),
            QUERY_TIMEOUT,
        )?;
        Ok(parse_show(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Downloads `packages` (exact versions) into the empty directory `into`, calling
    /// `progress` with the bytes so far; returns the .deb file of each package.
    pub fn download(
        &self,
        packages: &[Package],
        into: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<BTreeMap<String, PathBuf>> {
        let mut cmd = self.command("apt-get");
        cmd.args(["-q", "download"])
            .args(packages.iter().map(|p| format!("{}={}", p.name, p.version)))
            .current_dir(into)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().context("could not start apt-get download")?;
        let stderr = child.stderr.take();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut s) = stderr {
                use std::io::Read;
                let _ = s.read_to_string(&mut text);
            }
            text
        });
        let bytes_so_far = || -> u64 {
            std::fs::read_dir(into)
                .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0)
        };
        let status = wait_within(&mut child, DOWNLOAD_TIMEOUT, &|| progress(bytes_so_far()))
            .context("apt-get download")?;
        let errors = errors.join().unwrap_or_default();
        if !status.success() {
            bail!(
                "apt-get download from {} {} failed ({status}): {}",
                self.mirror,
                self.suite,
                errors.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" / ")
            );
        }
        progress(bytes_so_far());
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(into)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("deb") {
                continue;
            }
            let fields = text_within(
                Command::new("dpkg-deb").args(["--field"]).arg(&path).args(["Package", "Version"]),
                QUERY_TIMEOUT,
            )?;
            let record = parse_show(&fields);
            let (name, stanza) = record
                .into_iter()
                .next()
                .with_context(|| format!("{} has no control fields", path.display()))?;
            let wanted = packages.iter().find(|p| p.name == name);
            if wanted.is_some_and(|p| Some(p.version.as_str()) == stanza.get("Version")) {
                found.insert(name, path);
            }
        }
        for p in packages {
            if !found.contains_key(&p.name) {
                bail!("apt-get download gave no {} {}", p.name, p.version);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_files() {
        let one = "# comment\n\
                   deb http://mirror.example/debian bookworm main\n\
                   deb-src http://src.example/debian bookworm main\n\
                   deb [arch=amd64 signed-by=/k.gpg] https://m2.example/debian/ sid main # x\n\
                   deb http://security.example/debian-security bookworm-security main\n";
        let parsed = parse_one_line(one);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[1].uri, "https://m2.example/debian/");
        assert_eq!(parsed[1].suites, ["sid"]);
        let deb822 = "Types: deb\n\
                      # http://old.example/\n\
                      URIs: http://mirror.example/debian\n\
                      Suites: bookworm bookworm-updates\n\
                      Components: main\n\
                      \n\
                      Types: deb\n\
                      URIs: http://security.example/debian-security\n\
                      Suites: bookworm-security\n\
                      \n\
                      Types: deb-src\n\
                      URIs: http://src.example/debian\n\
                      Suites: bookworm\n\
                      \n\
                      Types: deb\n\
                      URIs: http://off.example/debian\n\
                      Suites: trixie\n\
                      Enabled: no\n";
        let parsed = parse_deb822(deb822);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].suites, ["bookworm", "bookworm-updates"]);
        let ranked = rank_mirrors(&[parsed[1].clone(), parsed[0].clone(), parsed[0].clone()]);
        assert_eq!(
            ranked,
            ["http://mirror.example/debian", "http://security.example/debian-security"]
        );
    }

    #[test]
    fn dependency_fields() {
        let deps = parse_depends(
            "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
             linux-binary-7.2.13+deb14-riscv64 (= 7.2.13-1), libc6:any (>= 2.38)",
        );
        assert_eq!(
            deps,
            vec![
                vec!["dracut".to_string(), "initramfs-tools".into(), "linux-initramfs-tool".into()],
                vec!["linux-binary-7.2.13+deb14-riscv64".into()],
                vec!["libc6".into()],
            ]
        );
        assert!(parse_depends("").is_empty());
    }

    #[test]
    fn show_output() {
        let text = "Package: dropbear-bin\nVersion: 2026.94-1\nDepends: libc6 (>= 2.38), zlib1g\n\
                    Size: 193308\nDescription: x\n more\n\nPackage: libc6\nVersion: 2.43-7\n\
                    Pre-Depends: libgcc-s1\n";
        let m = parse_show(text);
        assert_eq!(m.len(), 2);
        let d = &m["dropbear-bin"];
        assert_eq!(d.get("description"), Some("x\nmore"));
        let p = d.package().expect("a package");
        assert_eq!(
            (p.name.as_str(), p.version.as_str(), p.size),
            ("dropbear-bin", "2026.94-1", 193308)
        );
        assert_eq!(m["libc6"].depends(), vec![vec!["libgcc-s1".to_string()]]);
        let epoch = Package { name: "zlib1g".into(), version: "1:1.3-4".into(), size: 0 };
        assert_eq!(epoch.file_stem(), "zlib1g_1%3a1.3-4");
    }
}
