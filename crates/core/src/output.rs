//! Where layerfold writes: one rule for every command and API call that writes a folder (DESIGN.md,
//! "Conventions"; README, "Output safety").
//!
//! - The target may not be an input, contain one, lie inside one, or resolve to any of those
//!   through a symbolic link: paths are compared after resolving links. A target that is itself a
//!   link is followed, and the link is left in place.
//! - An existing target is used only when it is an empty folder, or, with `force`, a folder that
//!   holds no input and no subfolder. layerfold's outputs are flat, so a folder with subfolders
//!   (a home folder, a project) is not one of them and is never deleted; nor is the working folder
//!   or a folder around it.
//! - The output is written into a staging folder beside the target and renamed into place, so the
//!   target appears complete or not at all. The staging folder's name carries its owner (host,
//!   process id and start time); a later run for the same target removes those whose owner is gone,
//!   so even a killed run leaves nothing behind for long.

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A checked output target. Build it with [`OutputTarget::check`] before any long work, so a bad
/// target fails first; [`OutputTarget::stage`] then gives the folder to write into.
#[derive(Debug, Clone)]
pub struct OutputTarget {
    /// The path as the user gave it, for messages.
    given: PathBuf,
    /// The absolute target, links resolved.
    resolved: PathBuf,
    inputs: Vec<PathBuf>,
    force: bool,
}

/// The staging folder of one write. Dropped without [`StagingDir::commit`], it is removed.
#[derive(Debug)]
pub struct StagingDir {
    target: OutputTarget,
    dir: PathBuf,
    committed: bool,
}

impl OutputTarget {
    /// Checks `out` against the rule (module docs) for a command that reads `inputs` (model files or
    /// folders, data files; missing ones are ignored).
    pub fn check(out: &Path, inputs: &[PathBuf], force: bool) -> Result<Self> {
        if out.as_os_str().is_empty() {
            return Err(Error::config("out", "the output folder is an empty path"));
        }
        let resolved = resolve(out)?;
        if resolved.parent().is_none() {
            return Err(Error::config(
                "out",
                format!("`{}` is the root folder; choose a folder for the output", out.display()),
            ));
        }
        let inputs = input_files(inputs);
        let target = Self { given: out.to_path_buf(), resolved, inputs, force };
        target.check_against_inputs()?;
        target.check_existing()?;
        Ok(target)
    }

    /// The absolute target path, links resolved.
    pub fn path(&self) -> &Path {
        &self.resolved
    }

    /// Checks the file `out` (a log, a report) against the same rule: never an input or inside
    /// one; an existing file is replaced only with `force`; a folder is the wrong kind.
    pub fn check_file(out: &Path, inputs: &[PathBuf], force: bool) -> Result<Self> {
        if out.as_os_str().is_empty() {
            return Err(Error::config("out", "the output file is an empty path"));
        }
        let resolved = resolve(out)?;
        if resolved.parent().is_none() {
            return Err(Error::config("out", format!("`{}` is the root folder", out.display())));
        }
        let target =
            Self { given: out.to_path_buf(), resolved, inputs: input_files(inputs), force };
        target.check_against_inputs()?;
        match std::fs::metadata(&target.resolved) {
            Ok(m) if m.is_dir() => Err(Error::config(
                "out",
                format!("`{}` is a folder, not a file: give a file path", out.display()),
            )),
            Ok(_) if !force => Err(Error::OutputExists {
                path: out.to_path_buf(),
                hint: "choose another file, or pass force to replace it".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(part_is_file(out)),
            _ => Ok(target),
        }
    }

    /// Writes the file `out` after [`OutputTarget::check_file`]: beside it, then renamed into place.
    pub fn write_file(
        out: &Path,
        bytes: &[u8],
        inputs: &[PathBuf],
        force: bool,
    ) -> Result<PathBuf> {
        Self::write_file_with(out, inputs, force, |file| {
            use std::io::Write;
            file.write_all(bytes).map_err(|e| Error::io(out, e))
        })
    }

    /// [`OutputTarget::write_file`] for content that `write` streams into the staged file (a
    /// GGUF model). An error from `write`, or a failed flush or rename, removes the staged file.
    pub fn write_file_with(
        out: &Path,
        inputs: &[PathBuf],
        force: bool,
        write: impl FnOnce(&mut std::fs::File) -> Result<()>,
    ) -> Result<PathBuf> {
        let target = Self::check_file(out, inputs, force)?;
        let parent = target.resolved.parent().expect("checked: the target is not the root");
        let failed = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::StorageFull => Error::DiskFull { path: out.to_path_buf() },
            std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => {
                part_is_file(out)
            }
            _ => Error::Unwritable { path: out.to_path_buf(), source },
        };
        std::fs::create_dir_all(parent).map_err(failed)?;
        let name = target.name().to_os_string();
        remove_stale(parent, &name);
        let tmp = parent.join(Owner::current().file_name(&name, "tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(failed)?;
        let written = write(&mut file).map_err(|e| match e {
            // An error of the staged file is one of the target.
            Error::Io { source, .. } => failed(source),
            other => other,
        });
        let flushed = written.and_then(|()| {
            file.sync_all().and_then(|()| std::fs::rename(&tmp, &target.resolved)).map_err(failed)
        });
        if let Err(e) = flushed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let _ = sync_dir(parent);
        Ok(out.to_path_buf())
    }

    fn check_against_inputs(&self) -> Result<()> {
        let out = &self.given;
        for input in &self.inputs {
            let what = if input.is_dir() { "folder" } else { "file" };
            // Paths first, then file identities, which also see through bind mounts and
            // case-insensitive names.
            let (out_id, out_up, in_up) =
                (identity(&self.resolved), identities_up(&self.resolved), identities_up(input));
            let problem =
                if *input == self.resolved || out_id.is_some() && out_id == identity(input) {
                    format!("is the input {what} `{}`", input.display())
                } else if input.starts_with(&self.resolved)
                    || out_id.is_some_and(|o| in_up.contains(&o))
                {
                    format!("contains the input {what} `{}`", input.display())
                } else if self.resolved.starts_with(input)
                    || identity(input).is_some_and(|i| out_up.contains(&i))
                {
                    format!("lies inside the input {what} `{}`", input.display())
                } else {
                    continue;
                };
            let via_link = if self.resolved != absolute(out) { " (through a link)" } else { "" };
            return Err(Error::config(
                "out",
                format!(
                    "`{}`{via_link} {problem}; layerfold never writes over its input: choose a \
                     folder outside it, such as `{}`",
                    out.display(),
                    suggestion(input).display()
                ),
            ));
        }
        Ok(())
    }

    fn check_existing(&self) -> Result<()> {
        let out = &self.given;
        let meta = match std::fs::metadata(&self.resolved) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(part_is_file(out))
            }
            Err(e) => return Err(Error::Unwritable { path: out.clone(), source: e }),
        };
        if !meta.is_dir() {
            return Err(Error::config(
                "out",
                format!("`{}` is a file, not a folder: give a folder path", out.display()),
            ));
        }
        let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(&self.resolved)
            .and_then(|d| d.collect::<std::io::Result<_>>())
            .map_err(|e| Error::Unwritable { path: out.clone(), source: e })?;
        if entries.is_empty() {
            return Ok(());
        }
        if !self.force {
            return Err(Error::OutputExists {
                path: out.clone(),
                hint: "choose another folder, or pass force to replace it".into(),
            });
        }
        if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) {
            if cwd.starts_with(&self.resolved) {
                return Err(Error::OutputExists {
                    path: out.clone(),
                    hint: "it is the working folder or holds it, and force never replaces that: \
                           choose another folder"
                        .into(),
                });
            }
        }
        // `file_type` does not follow links: a link to a folder is not a subfolder.
        if let Some(sub) = entries.iter().find(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            return Err(Error::OutputExists {
                path: out.clone(),
                hint: format!(
                    "it holds the subfolder `{}`, so it is not an earlier layerfold output and \
                     force does not replace it: choose another folder, or empty it yourself",
                    sub.file_name().to_string_lossy()
                ),
            });
        }
        Ok(())
    }

    /// Removes the target's stale staging folders and creates a fresh one beside the target.
    pub fn stage(self) -> Result<StagingDir> {
        let parent = self.resolved.parent().expect("checked: the target is not the root");
        let unwritable = |source| Error::Unwritable { path: self.given.clone(), source };
        std::fs::create_dir_all(parent).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => {
                part_is_file(&self.given)
            }
            std::io::ErrorKind::StorageFull => Error::DiskFull { path: self.given.clone() },
            _ => unwritable(e),
        })?;
        let name = self.name().to_os_string();
        remove_stale(parent, &name);
        let dir = parent.join(Owner::current().file_name(&name, "tmp"));
        std::fs::create_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::StorageFull => Error::DiskFull { path: self.given.clone() },
            _ => unwritable(e),
        })?;
        Ok(StagingDir { target: self, dir, committed: false })
    }

    fn name(&self) -> &OsStr {
        self.resolved.file_name().expect("resolved paths end in a name")
    }
}

impl StagingDir {
    /// The folder to write into.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The target as the user gave it.
    pub fn target(&self) -> &Path {
        &self.target.given
    }

    /// `err` with paths inside the staging folder shown as the target paths they will become.
    pub fn relocate(&self, err: Error) -> Error {
        err.relocate(&self.dir, &self.target.given)
    }

    /// Moves the finished folder into place and returns the target as given. The rule is checked
    /// again first: the target may have changed while the output was written.
    pub fn commit(mut self) -> Result<PathBuf> {
        self.target.check_against_inputs()?;
        self.target.check_existing()?;
        let given = self.target.given.clone();
        let target = self.target.resolved.clone();
        let failed = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::StorageFull => Error::DiskFull { path: given.clone() },
            _ => Error::Unwritable { path: given.clone(), source },
        };
        sync_dir(&self.dir).map_err(failed)?;
        // rename(2) replaces a missing target or an empty folder atomically.
        match std::fs::rename(&self.dir, &target) {
            Ok(()) => {}
            Err(e) if is_not_empty(&e) && self.target.force => {
                replace(&self.dir, &target, self.target.name()).map_err(failed)?;
            }
            Err(e) if is_not_empty(&e) => {
                return Err(Error::OutputExists {
                    path: given,
                    hint: "another run wrote it meanwhile: choose another folder, or pass force"
                        .into(),
                })
            }
            Err(e) => return Err(failed(e)),
        }
        self.committed = true;
        if let Some(parent) = target.parent() {
            // The rename is durable once the parent's entry is; a failure here loses nothing.
            let _ = sync_dir(parent);
        }
        Ok(given)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn part_is_file(out: &Path) -> Error {
    Error::config(
        "out",
        format!("`{}` cannot be created: a part of its path is a file", out.display()),
    )
}

fn is_not_empty(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists)
}

/// Puts the folder `staged` in the place of the non-empty folder `target` and removes the old one:
/// an atomic exchange where the OS has one (Linux `renameat2`), else two renames, the old folder
/// parked under an owned name that a later run cleans up if this one dies in between.
fn replace(staged: &Path, target: &Path, name: &OsStr) -> std::io::Result<()> {
    if exchange(staged, target)? {
        // `staged` now holds the old folder.
        return std::fs::remove_dir_all(staged);
    }
    let parked = target.with_file_name(Owner::current().file_name(name, "old"));
    std::fs::rename(target, &parked)?;
    std::fs::rename(staged, target)?;
    std::fs::remove_dir_all(&parked)
}

/// Swaps two paths atomically; `Ok(false)` where the OS or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<bool> {
    Ok(false)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `path` made absolute (against the working folder) and normalised, without touching the disk.
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The absolute path `out` names, every link resolved: the longest existing prefix is
/// canonicalised and the rest appended. A dangling link is an error (its target is unclear).
fn resolve(out: &Path) -> Result<PathBuf> {
    let abs = absolute(out);
    if let Ok(meta) = std::fs::symlink_metadata(&abs) {
        return match std::fs::canonicalize(&abs) {
            Ok(p) => Ok(p),
            Err(_) if meta.file_type().is_symlink() => Err(Error::config(
                "out",
                format!(
                    "`{}` is a link to a path that does not exist; give the folder itself",
                    out.display()
                ),
            )),
            Err(e) => Err(Error::Unwritable { path: out.to_path_buf(), source: e }),
        };
    }
    let mut rest: Vec<OsString> = Vec::new();
    let mut base = abs.as_path();
    loop {
        match base.parent() {
            None => break,
            Some(parent) => {
                rest.push(base.file_name().unwrap_or_default().to_os_string());
                base = parent;
                if std::fs::symlink_metadata(base).is_ok() {
                    break;
                }
            }
        }
    }
    let mut resolved = std::fs::canonicalize(base)
        .map_err(|e| Error::Unwritable { path: out.to_path_buf(), source: e })?;
    for part in rest.iter().rev() {
        resolved.push(part);
    }
    Ok(resolved)
}

/// The inputs, links resolved, and for a folder also where the links inside it point: a Hugging
/// Face cache snapshot is a folder of links into `blobs/`, and those blobs are the input's bytes.
fn input_files(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for input in inputs {
        let Ok(resolved) = std::fs::canonicalize(input) else { continue };
        if resolved.is_dir() {
            for entry in std::fs::read_dir(&resolved).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                    out.extend(std::fs::canonicalize(entry.path()).ok());
                }
            }
        }
        out.push(resolved);
    }
    out
}

/// The device and inode of `path`, if it exists.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The identities of `path` (if it exists) and of every existing folder above it.
fn identities_up(path: &Path) -> Vec<(u64, u64)> {
    path.ancestors().filter_map(identity).collect()
}

/// A folder beside `input` to suggest in a message.
fn suggestion(input: &Path) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    input.with_file_name(format!("{stem}-layerfold"))
}

/// Who made a staging folder: enough to tell, later, whether that process is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    host: u32,
    pid: u32,
    /// Process start time (Linux clock ticks since boot; 0 elsewhere), so a reused pid is told
    /// apart from the owner.
    start: u64,
}

/// Staging folders made by this process, numbered so that concurrent writes never share one.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);
const MARK: &str = ".layerfold-";

impl Owner {
    fn current() -> Self {
        let pid = std::process::id();
        Self { host: host_id(), pid, start: start_time(pid).unwrap_or(0) }
    }

    /// `.{name}.layerfold-{host}-{pid}-{start}-{n}.{kind}`.
    fn file_name(&self, name: &OsStr, kind: &str) -> OsString {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let mut s = OsString::from(".");
        s.push(name);
        s.push(format!("{MARK}{:08x}-{}-{}-{n}.{kind}", self.host, self.pid, self.start));
        s
    }

    /// The owner of a staging folder of target `name`, from the folder's own name.
    fn parse(entry: &OsStr, name: &OsStr) -> Option<Self> {
        let entry = entry.to_str()?;
        let rest = entry.strip_prefix('.')?.strip_prefix(name.to_str()?)?.strip_prefix(MARK)?;
        let rest = rest.strip_suffix(".tmp").or_else(|| rest.strip_suffix(".old"))?;
        let mut parts = rest.split('-');
        let host = u32::from_str_radix(parts.next()?, 16).ok()?;
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        parts.next()?.parse::<u64>().ok()?;
        parts.next().is_none().then_some(Self { host, pid, start })
    }

    /// True when the process that made the folder has ended. Folders of other hosts (a shared
    /// file system) and of live processes, this one included, are never judged gone.
    fn is_gone(&self) -> bool {
        if self.host != host_id() || self.pid == std::process::id() {
            return false;
        }
        match start_time(self.pid) {
            Some(start) => self.start != 0 && start != self.start,
            None => !process_exists(self.pid),
        }
    }
}

/// Removes the staging folders of target `name` in `parent` whose owner has ended. Best effort:
/// a folder that cannot be removed is left for the next run.
fn remove_stale(parent: &Path, name: &OsStr) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        if !Owner::parse(&entry.file_name(), name).is_some_and(|o| o.is_gone()) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => drop(std::fs::remove_dir_all(entry.path())),
            Ok(t) if t.is_file() => drop(std::fs::remove_file(entry.path())),
            _ => {}
        }
    }
}

/// A short hash of the host name (FNV-1a).
fn host_id() -> u32 {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 { &buf[..buf.iter().position(|&b| b == 0).unwrap_or(0)] } else { &[] };
    name.iter().fold(0x811c9dc5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x01000193))
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), where the OS tells it.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may hold spaces: count from its end.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only asks whether the process exists; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(p: &Path) -> Vec<PathBuf> {
        vec![p.to_path_buf()]
    }

    #[test]
    fn refuses_the_input_its_parents_and_its_insides() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        for out in [model.clone(), dir.path().to_path_buf(), model.join("sub"), model.join("a/b")] {
            for force in [false, true] {
                let e = OutputTarget::check(&out, &inputs(&model), force).unwrap_err();
                assert_eq!(e.code(), "E_CONFIG", "{}: {e}", out.display());
                assert!(e.to_string().contains("never writes over its input"), "{e}");
            }
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&model, &link).unwrap();
        let e = OutputTarget::check(&link, &inputs(&model), true).unwrap_err();
        assert!(e.to_string().contains("through a link"), "{e}");
        let e = OutputTarget::check(&link.join("x"), &inputs(&model), true).unwrap_err();
        assert_eq!(e.code(), "E_CONFIG");
        assert!(OutputTarget::check(&dir.path().join("out"), &inputs(&model), false).is_ok());
    }

    #[test]
    fn the_files_an_input_links_to_are_inputs_too() {
        // A Hugging Face cache: snapshots/main/model.safetensors -> ../../blobs/abc.
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        let snapshot = dir.path().join("snapshots/main");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::write(blobs.join("abc"), "weights").unwrap();
        std::os::unix::fs::symlink("../../blobs/abc", snapshot.join("model.safetensors")).unwrap();
        let e = OutputTarget::check(&blobs, &inputs(&snapshot), true).unwrap_err();
        assert!(e.to_string().contains("contains the input file"), "{e}");
    }

    #[test]
    fn force_replaces_only_flat_folders() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("sub")).unwrap();
        let e = OutputTarget::check(&out, &[], true).unwrap_err();
        assert_eq!(e.code(), "E_OUTPUT_EXISTS");
        assert!(e.to_string().contains("subfolder `sub`"), "{e}");
        std::fs::remove_dir(out.join("sub")).unwrap();
        std::fs::write(out.join("old.txt"), "x").unwrap();
        let e = OutputTarget::check(&out, &[], false).unwrap_err();
        assert!(e.to_string().contains("pass force"), "{e}");
        let staged = OutputTarget::check(&out, &[], true).unwrap().stage().unwrap();
        std::fs::write(staged.path().join("new.txt"), "y").unwrap();
        staged.commit().unwrap();
        let names: Vec<_> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![OsString::from("new.txt")]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing left beside it");
    }

    #[test]
    fn a_file_target_is_the_wrong_kind_and_force_does_not_help() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = OutputTarget::check(&file, &[], true).unwrap_err();
        assert_eq!(e.code(), "E_CONFIG");
        assert!(!e.to_string().contains("force"), "{e}");
        let e = OutputTarget::check(&file.join("x"), &[], false).unwrap_err();
        assert_eq!(e.code(), "E_CONFIG", "{e}");
        assert!(e.to_string().contains("part of its path is a file"), "{e}");
    }

    #[test]
    fn dropped_staging_is_removed_and_stale_staging_of_dead_owners_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let staged = OutputTarget::check(&out, &[], false).unwrap().stage().unwrap();
        std::fs::write(staged.path().join("a"), "x").unwrap();
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A folder left by a process that has ended (no process has this pid).
        let dead = Owner { pid: u32::MAX - 1, ..Owner::current() };
        let stale = dir.path().join(dead.file_name(OsStr::new("out"), "tmp"));
        std::fs::create_dir(&stale).unwrap();
        let live = dir.path().join(Owner::current().file_name(OsStr::new("out"), "tmp"));
        std::fs::create_dir(&live).unwrap();
        let other = dir.path().join(dead.file_name(OsStr::new("other"), "tmp"));
        std::fs::create_dir(&other).unwrap();
        let staged = OutputTarget::check(&out, &[], false).unwrap().stage().unwrap();
        assert!(!stale.exists(), "the dead owner's staging folder is removed");
        assert!(live.exists() && other.exists(), "live owners and other targets are left");
        staged.commit().unwrap();
        assert!(out.is_dir());
    }

    #[test]
    fn files_follow_the_same_rule() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("model.gguf");
        std::fs::write(&input, "weights").unwrap();
        let e = OutputTarget::write_file(&input, b"x", &inputs(&input), true).unwrap_err();
        assert_eq!(e.code(), "E_CONFIG");
        assert_eq!(std::fs::read(&input).unwrap(), b"weights");
        let log = dir.path().join("logs/samples.jsonl");
        OutputTarget::write_file(&log, b"a\n", &inputs(&input), false).unwrap();
        let e = OutputTarget::write_file(&log, b"b\n", &inputs(&input), false).unwrap_err();
        assert_eq!(e.code(), "E_OUTPUT_EXISTS");
        OutputTarget::write_file(&log, b"b\n", &inputs(&input), true).unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"b\n");
        assert_eq!(
            std::fs::read_dir(log.parent().unwrap()).unwrap().count(),
            1,
            "no staging file left"
        );
        let e = OutputTarget::write_file(dir.path(), b"x", &[], true).unwrap_err();
        assert!(e.to_string().contains("is a folder"), "{e}");
    }

    #[test]
    fn owner_names_round_trip() {
        let o = Owner::current();
        let name = o.file_name(OsStr::new("my-out.v2"), "tmp");
        assert_eq!(Owner::parse(&name, OsStr::new("my-out.v2")), Some(o));
        assert_eq!(Owner::parse(&name, OsStr::new("my-out")), None);
        assert_eq!(
            Owner::parse(OsStr::new(".my-out.v2.layerfold-zz-1-2-3.tmp"), OsStr::new("my-out.v2")),
            None
        );
    }
}
