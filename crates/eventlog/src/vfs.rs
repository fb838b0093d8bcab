//! The file operations the engine uses, behind a small interface, so tests can run the engine
//! on a simulated disk that loses unsynced bytes, tears writes and fails on demand
//! (`eventlog::sim::SimFs`, with the `test-support` feature). [`RealFs`] is the operating
//! system's file system.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file. All I/O is positional: there is no shared cursor.
// `len` is the file's size in bytes, as `Metadata::len`; an `is_empty` would mean nothing here.
#[allow(clippy::len_without_is_empty)]
pub trait VfsFile: Send + Sync + Debug {
    /// Reads into `buf` from `offset`; answers the bytes read (0 at the end of the file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes `buf` at `offset`; answers the bytes written (maybe fewer).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// `fdatasync`: the file's data (and size) reach stable storage.
    fn sync_data(&self) -> io::Result<()>;
    /// Sets the file's size in bytes, cutting it or extending it with zeros.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's size in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Bytes an unprivileged writer may still use on the file's file system, if known.
    fn free_space(&self) -> Option<u64> {
        None
    }
}

/// A shared open file.
pub type FileHandle = Arc<dyn VfsFile>;

/// Why a directory lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone else holds it.
    Held,
    /// Taking it failed.
    Io(io::Error),
}

/// A file system.
pub trait Vfs: Send + Sync + Debug {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether `dir` exists and is a directory.
    fn is_dir(&self, dir: &Path) -> bool;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading, or for reading and writing.
    fn open(&self, path: &Path, write: bool) -> io::Result<FileHandle>;
    /// Creates a file that must not exist yet, for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<FileHandle>;
    /// Creates or truncates a file for writing.
    fn create_truncate(&self, path: &Path) -> io::Result<FileHandle>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes entry changes in `dir` (create, rename, remove) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of a store directory, held until the returned guard drops.
    fn lock(&self, dir: &Path) -> Result<Box<dyn Send + Sync>, LockError>;
    /// The clock the engine's timers read (interval fsyncs, checkpoints by time). A simulated
    /// disk drives it from the test, so that those timers fire where the schedule says.
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
    /// `true` when every outcome should depend only on the calls made (a simulated disk): the
    /// engine then does its background work (preallocation, periodic checkpoints) inline on the
    /// writer thread instead of on threads of its own.
    fn deterministic(&self) -> bool {
        false
    }
}

/// The shared handle to a file system that [`crate::Options`] carries.
pub type Storage = Arc<dyn Vfs>;

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl VfsFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.0.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn free_space(&self) -> Option<u64> {
        let stats = rustix::fs::fstatvfs(&self.0).ok()?;
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
    }
}

impl Vfs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }
    fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<FileHandle> {
        let file = OpenOptions::new().read(true).write(write).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }
    fn create_new(&self, path: &Path) -> io::Result<FileHandle> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }
    fn create_truncate(&self, path: &Path) -> io::Result<FileHandle> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn lock(&self, dir: &Path) -> Result<Box<dyn Send + Sync>, LockError> {
        let path: PathBuf = dir.join(crate::LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(fs::TryLockError::WouldBlock) => Err(LockError::Held),
            Err(fs::TryLockError::Error(e)) => Err(LockError::Io(e)),
        }
    }
}

/// Writes all of `buf` at `offset`, retrying short writes.
pub fn write_all_at(file: &dyn VfsFile, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write the whole buffer",
                ));
            }
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads as many bytes as the file has at `offset`, up to `buf.len()`.
pub fn read_at_most(file: &dyn VfsFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads the whole file.
pub fn read_all(file: &dyn VfsFile) -> io::Result<Vec<u8>> {
    let len = file.len()? as usize;
    let mut bytes = vec![0u8; len];
    let got = read_at_most(file, &mut bytes, 0)?;
    bytes.truncate(got);
    Ok(bytes)
}
