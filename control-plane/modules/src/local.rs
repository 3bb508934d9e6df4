//! Reading a module from the operator's module directory.
//!
//! The path a WasmFilter names is resolved inside the directory without touching anything
//! outside it: `..` and other non-plain components are refused before the file system is
//! asked anything, the result must still be inside the directory once symlinks are resolved,
//! and only a regular file is read, opened with `O_NOFOLLOW | O_NONBLOCK` (a FIFO or a device
//! is refused instead of blocking or streaming forever), through a size cap.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Why a local module cannot be read. The messages never say anything about files outside the
/// module directory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocalError {
    /// The control plane was started without a module directory.
    #[error(
        "local module paths are disabled: the control plane was started without --module-dir \
         (serve the module from an allowed URL, or ask the operator for a module directory)"
    )]
    Disabled,
    /// The path leaves the module directory, or is not a plain path inside it.
    #[error("{path} is not inside the control plane's module directory")]
    Outside {
        /// The path as the WasmFilter names it.
        path: String,
    },
    /// Nothing (readable) is there.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The path as the WasmFilter names it.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// A directory, FIFO, socket or device.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path as the WasmFilter names it.
        path: String,
    },
    /// Over the size cap.
    #[error("{path} is larger than {max} bytes")]
    TooLarge {
        /// The path as the WasmFilter names it.
        path: String,
        /// The cap.
        max: u64,
    },
}

/// The module directory, resolved once at start.
#[derive(Clone, Debug)]
pub struct ModuleDir {
    /// As the operator gave it.
    given: PathBuf,
    /// With symlinks resolved.
    canonical: PathBuf,
}

impl ModuleDir {
    /// Resolves `dir`, which must exist.
    pub fn new(dir: &Path) -> std::io::Result<ModuleDir> {
        let canonical = dir.canonicalize()?;
        if !canonical.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(ModuleDir {
            given: dir.to_path_buf(),
            canonical,
        })
    }

    /// The file `path` names inside the directory: relative to it, or absolute under it (as
    /// given or as resolved). Only plain components are accepted.
    fn resolve(&self, path: &str) -> Result<PathBuf, LocalError> {
        let outside = || LocalError::Outside {
            path: path.to_string(),
        };
        let requested = Path::new(path);
        let relative = if requested.is_absolute() {
            requested
                .strip_prefix(&self.canonical)
                .or_else(|_| requested.strip_prefix(&self.given))
                .map_err(|_| outside())?
        } else {
            requested
        };
        let mut inside = self.canonical.clone();
        let mut plain = 0;
        for component in relative.components() {
            match component {
                Component::Normal(part) => {
                    inside.push(part);
                    plain += 1;
                }
                Component::CurDir => {}
                _ => return Err(outside()),
            }
        }
        if plain == 0 {
            return Err(outside());
        }
        Ok(inside)
    }

    /// Reads the module `path` names, at most `max` bytes.
    pub fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, LocalError> {
        let unreadable = |e: std::io::Error| LocalError::Unreadable {
            path: path.to_string(),
            reason: e.kind().to_string(),
        };
        let file = self.resolve(path)?;
        // Symlinks inside the directory may not lead out of it.
        let real = file.canonicalize().map_err(unreadable)?;
        if !real.starts_with(&self.canonical) {
            return Err(LocalError::Outside {
                path: path.to_string(),
            });
        }
        let mut handle = open_no_follow(&real).map_err(unreadable)?;
        let meta = handle.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(LocalError::NotAFile {
                path: path.to_string(),
            });
        }
        let too_large = || LocalError::TooLarge {
            path: path.to_string(),
            max,
        };
        if meta.len() > max {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        (&mut handle)
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > max {
            return Err(too_large());
        }
        Ok(bytes)
    }
}

#[cfg(unix)]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // A final symlink is refused, and opening a FIFO does not wait for a writer.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dir() -> (tempfile::TempDir, ModuleDir) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("modules")).unwrap();
        let dir = ModuleDir::new(&tmp.path().join("modules")).unwrap();
        (tmp, dir)
    }

    #[test]
    fn a_module_inside_the_directory_is_read_by_relative_or_absolute_path() {
        let (tmp, dir) = dir();
        std::fs::write(tmp.path().join("modules/m.wasm"), b"\0asm").unwrap();
        assert_eq!(dir.read("m.wasm", 100).unwrap(), b"\0asm");
        let absolute = tmp.path().join("modules/m.wasm");
        assert_eq!(dir.read(absolute.to_str().unwrap(), 100).unwrap(), b"\0asm");
        assert_eq!(dir.read("./m.wasm", 100).unwrap(), b"\0asm");
    }

    #[test]
    fn paths_outside_the_directory_are_refused_without_saying_whether_they_exist() {
        let (tmp, dir) = dir();
        std::fs::write(tmp.path().join("secret"), b"token").unwrap();
        let secret = tmp.path().join("secret");
        for path in [
            secret.to_str().unwrap(),
            "../secret",
            "../nothing-here",
            "/etc/passwd",
            "/nothing/here",
            "",
            ".",
        ] {
            assert_eq!(
                dir.read(path, 100),
                Err(LocalError::Outside {
                    path: path.to_string()
                }),
                "{path}"
            );
        }
    }

    #[test]
    fn a_symlink_leading_out_of_the_directory_is_refused() {
        let (tmp, dir) = dir();
        std::fs::write(tmp.path().join("secret"), b"token").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), tmp.path().join("modules/link"))
            .unwrap();
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("modules/up")).unwrap();
        assert!(matches!(
            dir.read("link", 100),
            Err(LocalError::Outside { .. })
        ));
        assert!(matches!(
            dir.read("up/secret", 100),
            Err(LocalError::Outside { .. })
        ));
    }

    #[test]
    fn fifos_and_directories_are_refused_at_once() {
        let (tmp, dir) = dir();
        let fifo = tmp.path().join("modules/fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::create_dir(tmp.path().join("modules/sub")).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            dir.read("fifo", 100),
            Err(LocalError::NotAFile { .. })
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(matches!(
            dir.read("sub", 100),
            Err(LocalError::NotAFile { .. })
        ));
    }

    #[test]
    fn a_device_file_is_refused_within_a_second() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", tmp.path().join("zero")).unwrap();
        // A directory holding a device directly (an operator's mistake) is refused too.
        let dev = ModuleDir::new(Path::new("/dev")).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            dev.read("zero", 1 << 20),
            Err(LocalError::NotAFile { .. })
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let dir = ModuleDir::new(tmp.path()).unwrap();
        assert!(matches!(
            dir.read("zero", 1 << 20),
            Err(LocalError::Outside { .. })
        ));
    }

    #[test]
    fn files_over_the_cap_are_refused() {
        let (tmp, dir) = dir();
        std::fs::write(tmp.path().join("modules/big"), vec![0u8; 101]).unwrap();
        assert!(matches!(
            dir.read("big", 100),
            Err(LocalError::TooLarge { max: 100, .. })
        ));
        assert!(matches!(
            dir.read("missing", 100),
            Err(LocalError::Unreadable { .. })
        ));
    }
}
