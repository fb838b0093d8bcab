//! A simulated disk for fault-injection tests, in the spirit of LazyFS: it keeps, per file,
//! what is durable apart from what is only in the "page cache", and can lose or tear the
//! unsynced part at a simulated power cut. Faults can be injected on the live disk: a failing
//! fsync (with Linux's "fsyncgate" behaviour: the unsynced writes are dropped from what will
//! ever become durable, while reads still see them), writes failing with `ENOSPC` or `EIO`,
//! and short writes.
//!
//! Directory entries follow the same rule as data: a create, rename or remove is durable only
//! after `sync_dir` of its directory. Directories themselves are durable when created (the
//! engine never removes them).
//!
//! Everything is deterministic: a power cut takes a seed for how much of the unsynced data
//! survives. Meant for tests; see `tests/faults.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::vfs::{FileHandle, LockError, Vfs, VfsFile};

/// `ENOSPC`: no space left on device.
pub const ENOSPC: i32 = 28;
/// `EIO`: input/output error.
pub const EIO: i32 = 5;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// Changes since the last successful sync, in order; a power cut keeps a prefix of them.
    unsynced: Vec<Op>,
    /// Failed syncs so far. Like Linux's errseq, every open file description that has not
    /// yet seen an error gets it from its next sync.
    errors: u64,
}

/// Faults to inject on the live disk.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The next `sync_data` fails with `EIO` and its unsynced changes will never be durable.
    pub fail_next_sync: bool,
    /// The next `count` writes fail with this OS error (`ENOSPC`, `EIO`), writing nothing.
    pub fail_writes: Option<(i32, u32)>,
    /// The next write stores only this many bytes and reports a short write.
    pub short_next_write: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    nodes: HashMap<u64, Node>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    locked: BTreeSet<PathBuf>,
    faults: Faults,
    /// Counters of operations, to check a schedule did what it meant to.
    syncs: u64,
    writes: u64,
}

/// The simulated disk. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn lost_power() -> io::Error {
    io::Error::other("the simulated machine lost power; this handle is gone")
}

fn apply(bytes: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write {
            offset,
            bytes: written,
        } => {
            let end = *offset as usize + written.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[*offset as usize..end].copy_from_slice(written);
        }
        Op::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

/// A xorshift generator: deterministic from a seed.
fn next_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("sim state lock")
    }

    /// Sets the faults to inject from now on.
    pub fn inject(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Successful fsyncs and writes so far.
    pub fn counters(&self) -> (u64, u64) {
        let state = self.lock();
        (state.syncs, state.writes)
    }

    /// The machine loses power. Every handle opened before becomes unusable (the process is
    /// gone); what remains is the durable state of every file plus, per file, a prefix of its
    /// unsynced changes chosen from `seed` (nothing, all of it, or a write torn at a random
    /// byte), and the durable directory entries. Locks are released.
    pub fn power_cut(&self, seed: u64) {
        self.cut_power(Some(seed));
    }

    /// A power cut that loses every unsynced byte and directory entry.
    pub fn power_cut_losing_everything_unsynced(&self) {
        self.cut_power(None);
    }

    fn cut_power(&self, seed: Option<u64>) {
        let tear = seed.is_some();
        let mut seed = seed.unwrap_or(0) | 1;
        let mut state = self.lock();
        state.generation += 1;
        state.names = state.durable_names.clone();
        state.locked.clear();
        state.faults = Faults::default();
        let reachable: BTreeSet<u64> = state.names.values().copied().collect();
        state.nodes.retain(|inode, _| reachable.contains(inode));
        let mut inodes: Vec<u64> = state.nodes.keys().copied().collect();
        inodes.sort_unstable();
        for inode in inodes {
            let node = state.nodes.get_mut(&inode).expect("listed");
            let total: u64 = node
                .unsynced
                .iter()
                .map(|op| match op {
                    Op::Write { bytes, .. } => bytes.len() as u64,
                    Op::SetLen(_) => 0,
                })
                .sum();
            let mut budget = match next_random(&mut seed) % 4 {
                _ if !tear => 0,
                0 => 0,
                1 => total,
                _ => next_random(&mut seed) % (total + 1),
            };
            let mut survived = node.durable.clone();
            for op in &node.unsynced {
                match op {
                    Op::SetLen(_) => apply(&mut survived, op),
                    Op::Write { offset, bytes } => {
                        let kept = (bytes.len() as u64).min(budget) as usize;
                        if kept == 0 {
                            break;
                        }
                        apply(
                            &mut survived,
                            &Op::Write {
                                offset: *offset,
                                bytes: bytes[..kept].to_vec(),
                            },
                        );
                        budget -= kept as u64;
                        if kept < bytes.len() {
                            break;
                        }
                    }
                }
            }
            node.data = survived.clone();
            node.durable = survived;
            node.unsynced.clear();
        }
    }

    /// The current content of a file as reads see it (for tests that inspect files).
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = state.names.get(path)?;
        Some(state.nodes[inode].data.clone())
    }

    /// A deep copy of the whole disk (for comparing two opens of the same state).
    pub fn duplicate(&self) -> SimFs {
        let state = self.lock();
        SimFs {
            state: Arc::new(Mutex::new(State {
                generation: state.generation,
                nodes: state.nodes.clone(),
                names: state.names.clone(),
                durable_names: state.durable_names.clone(),
                dirs: state.dirs.clone(),
                next_inode: state.next_inode,
                locked: BTreeSet::new(),
                faults: Faults::default(),
                syncs: 0,
                writes: 0,
            })),
        }
    }

    fn handle(&self, state: &State, inode: u64) -> FileHandle {
        Arc::new(SimFile {
            fs: self.clone(),
            inode,
            generation: state.generation,
            seen_errors: std::sync::atomic::AtomicU64::new(state.nodes[&inode].errors),
        })
    }

    fn create(&self, state: &mut State, path: &Path) -> io::Result<u64> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !state.dirs.contains(parent) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.nodes.insert(inode, Node::default());
        state.names.insert(path.to_path_buf(), inode);
        Ok(inode)
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    inode: u64,
    generation: u64,
    /// Failed syncs of the node this description has been told about.
    seen_errors: std::sync::atomic::AtomicU64,
}

impl SimFile {
    fn node<'a>(&self, state: &'a mut State) -> io::Result<&'a mut Node> {
        if state.generation != self.generation {
            return Err(lost_power());
        }
        state.nodes.get_mut(&self.inode).ok_or_else(|| error(EIO))
    }
}

impl VfsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.fs.lock();
        let node = self.node(&mut state)?;
        let start = (offset as usize).min(node.data.len());
        let n = buf.len().min(node.data.len() - start);
        buf[..n].copy_from_slice(&node.data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut state = self.fs.lock();
        self.node(&mut state)?;
        if let Some((code, count)) = state.faults.fail_writes {
            state.faults.fail_writes = (count > 1).then_some((code, count - 1));
            return Err(error(code));
        }
        let len = match state.faults.short_next_write.take() {
            Some(short) => short.min(buf.len()),
            None => buf.len(),
        };
        state.writes += 1;
        let node = self.node(&mut state)?;
        let op = Op::Write {
            offset,
            bytes: buf[..len].to_vec(),
        };
        apply(&mut node.data, &op);
        node.unsynced.push(op);
        Ok(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.fs.lock();
        self.node(&mut state)?;
        use std::sync::atomic::Ordering::SeqCst;
        if std::mem::take(&mut state.faults.fail_next_sync) {
            // fsyncgate: the failed changes will never become durable, though reads see them.
            let node = self.node(&mut state)?;
            node.unsynced.clear();
            node.errors += 1;
            self.seen_errors.store(node.errors, SeqCst);
            return Err(error(EIO));
        }
        let errors = self.node(&mut state)?.errors;
        if self.seen_errors.swap(errors, SeqCst) < errors {
            return Err(error(EIO));
        }
        state.syncs += 1;
        let node = self.node(&mut state)?;
        let mut durable = std::mem::take(&mut node.durable);
        for op in node.unsynced.drain(..) {
            apply(&mut durable, &op);
        }
        node.durable = durable;
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.fs.lock();
        let node = self.node(&mut state)?;
        let op = Op::SetLen(len);
        apply(&mut node.data, &op);
        node.unsynced.push(op);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.fs.lock();
        Ok(self.node(&mut state)?.data.len() as u64)
    }
}

struct SimLock {
    fs: SimFs,
    dir: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.fs.lock();
        if state.generation == self.generation {
            state.locked.remove(&self.dir);
        }
    }
}

impl Vfs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        for ancestor in dir.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn is_dir(&self, dir: &Path) -> bool {
        self.lock().dirs.contains(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, _write: bool) -> io::Result<FileHandle> {
        let state = self.lock();
        let inode = *state
            .names
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(self.handle(&state, inode))
    }

    fn create_new(&self, path: &Path) -> io::Result<FileHandle> {
        let mut state = self.lock();
        if state.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let inode = self.create(&mut state, path)?;
        Ok(self.handle(&state, inode))
    }

    fn create_truncate(&self, path: &Path) -> io::Result<FileHandle> {
        let mut state = self.lock();
        let inode = match state.names.get(path) {
            Some(&inode) => {
                let node = state.nodes.get_mut(&inode).expect("named node");
                let op = Op::SetLen(0);
                apply(&mut node.data, &op);
                node.unsynced.push(op);
                inode
            }
            None => self.create(&mut state, path)?,
        };
        Ok(self.handle(&state, inode))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state
            .names
            .remove(path)
            .map(drop)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        state.durable_names.retain(|path, _| !in_dir(path));
        let entries: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, inode)| (path.clone(), *inode))
            .collect();
        state.durable_names.extend(entries);
        Ok(())
    }

    fn lock(&self, dir: &Path) -> Result<Box<dyn Send + Sync>, LockError> {
        let mut state = SimFs::lock(self);
        if !state.locked.insert(dir.to_path_buf()) {
            return Err(LockError::Held);
        }
        Ok(Box::new(SimLock {
            fs: self.clone(),
            dir: dir.to_path_buf(),
            generation: state.generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_and_entries_are_lost_at_a_power_cut_and_synced_ones_kept() {
        let fs = SimFs::new();
        let dir = Path::new("/store");
        fs.create_dir_all(dir).unwrap();
        let kept = fs.create_new(&dir.join("kept")).unwrap();
        kept.write_at(b"durable", 0).unwrap();
        kept.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        kept.write_at(b" and not", 7).unwrap();
        let lost = fs.create_new(&dir.join("lost")).unwrap();
        lost.write_at(b"x", 0).unwrap();
        lost.sync_data().unwrap(); // data synced, but its directory entry is not
        fs.power_cut_losing_everything_unsynced();
        assert_eq!(fs.read(&dir.join("kept")).unwrap(), b"durable");
        assert_eq!(fs.read(&dir.join("lost")), None);
        assert!(
            kept.read_at(&mut [0; 4], 0).is_err(),
            "old handles die with the power"
        );
    }

    #[test]
    fn a_failed_fsync_drops_its_changes_from_what_becomes_durable() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let file = fs.create_new(&dir.join("f")).unwrap();
        fs.sync_dir(dir).unwrap();
        file.write_at(b"gone", 0).unwrap();
        fs.inject(Faults {
            fail_next_sync: true,
            ..Faults::default()
        });
        assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(EIO));
        assert_eq!(
            fs.read(&dir.join("f")).unwrap(),
            b"gone",
            "reads still see it"
        );
        file.sync_data().unwrap();
        fs.power_cut(7);
        assert_eq!(fs.read(&dir.join("f")).unwrap(), b"");
    }
}
