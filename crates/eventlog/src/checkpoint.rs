//! Index checkpoints: a cache of the index so that open replays only the tail of the log.
//!
//! A checkpoint is one file, `index.ckpt`, replaced atomically (write a temporary file, fsync
//! it, rename it over the old one, fsync the directory). It records the segments it covers
//! with the byte length covered in each, every covered event's id and offset, the id table's
//! seed and slots (so a restart loads the table instead of rebuilding it), and every stream's
//! positions, followed by a CRC32C of everything before it. Loading checks the checksum, the
//! bounds of every field, and that the log still holds what the checkpoint says (segment
//! names, lengths, and the id of the last covered record); any mismatch means the caller falls
//! back to a full replay. A checkpoint can therefore only ever be missing, stale or wrong,
//! never harmful. Layout: `docs/FORMAT.md`.

use std::io::{self, BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use crate::background::{Courtesy, WORK_BETWEEN_YIELDS};
use crate::error::{Error, Result};
use crate::format::{Decoded, SEGMENT_HEADER_LEN, decode_record};
use crate::index::{IdTable, Index, SegmentEntry};
use crate::recovery::Resume;
use crate::segment::fsync_dir;
use crate::vfs::{FileHandle, Vfs, read_at_most};

pub const CHECKPOINT_FILE: &str = "index.ckpt";
const CHECKPOINT_TMP_FILE: &str = "index.ckpt.tmp";
const MAGIC: [u8; 8] = *b"LBCKPT02";
/// The magic of a checkpoint of an index with holes (after a scavenge): the same layout plus
/// the head, the explicit positions of the first slots, and each stream's first version.
const MAGIC_WITH_HOLES: [u8; 8] = *b"LBCKPT03";
/// Values converted per chunk when (de)serializing integer arrays.
const CHUNK_VALUES: usize = 64 * 1024;

pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Sequential reads and writes over a positional file.
struct Sequential {
    file: FileHandle,
    offset: u64,
}

impl Read for Sequential {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// While a checkpoint is written, its bytes are made durable every this many, so that the
/// disk sees a steady stream instead of one burst of half a gigabyte at the final fsync (the
/// burst stalled the whole machine, readers included, for tens of milliseconds).
const CHECKPOINT_SYNC_EVERY_BYTES: u64 = 32 * 1024 * 1024;

impl Write for Sequential {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.offset)?;
        let before = self.offset;
        self.offset += n as u64;
        if before / CHECKPOINT_SYNC_EVERY_BYTES != self.offset / CHECKPOINT_SYNC_EVERY_BYTES {
            self.file.sync_data()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that keeps a running CRC32C of what passes through it, and lets the readers and
/// the writer have the core every few hundred KiB (see [`crate::background`]).
struct CrcWriter<W: Write> {
    inner: W,
    crc: u32,
    courtesy: Courtesy,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        for chunk in bytes.chunks(WORK_BETWEEN_YIELDS) {
            self.crc = crc32c::crc32c_append(self.crc, chunk);
            self.inner.write_all(chunk)?;
            self.courtesy.did(chunk.len());
        }
        Ok(())
    }
}

/// What a checkpoint covers, fixed when it starts: the first `events` positions and, per
/// segment, the bytes holding them. Taken under the index lock by the writer, after it made
/// those bytes durable.
#[derive(Debug, Clone)]
pub struct Cut {
    /// Live events covered (slots).
    events: u64,
    /// The next position at the cut.
    head: u64,
    /// The index's generation (see [`Index::generation`]) at the cut.
    generation: u64,
    segments: Vec<(u64, u64)>,
    seed: u64,
    slots: usize,
    streams: usize,
}

impl Cut {
    /// Everything `index` holds now.
    pub fn of(index: &Index) -> Cut {
        Cut {
            events: index.live() as u64,
            head: index.len(),
            generation: index.generation(),
            segments: index
                .segments
                .iter()
                .map(|s| (s.first_position, s.visible_len))
                .collect(),
            seed: index.id_table().parts().0,
            slots: index.id_table().slot_count(),
            streams: index.stream_count(),
        }
    }
}

/// Values copied per stretch under the index read lock (about 1 MiB of ids).
const STRETCH_VALUES: usize = 64 * 1024;

/// Writes a checkpoint of `cut` to the temporary file and fsyncs it. Call [`install`]
/// afterwards. The index may grow meanwhile (only the writer changes it, and only by adding):
/// it is read in stretches of [`STRETCH_VALUES`] under its read lock, and the file is written
/// and fsynced outside the lock.
pub fn write_temporary(vfs: &dyn Vfs, dir: &Path, index: &RwLock<Index>, cut: &Cut) -> Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP_FILE);
    let holes = holes_at_cut(index, cut, &tmp)?;
    let written = (|| -> io::Result<()> {
        let file = vfs.create_truncate(&tmp)?;
        let mut sections = SectionWriter::new(file, index, cut, holes);
        sections.header()?;
        sections.ids()?;
        sections.offsets()?;
        sections.slots()?;
        if holes {
            sections.sparse_positions()?;
        }
        sections.streams()?;
        sections.finish()
    })();
    written.map_err(|e| Error::io(&tmp, e))
}

/// Whether the index has holes, after checking that the cut is not stale.
fn holes_at_cut(index: &RwLock<Index>, cut: &Cut, tmp: &Path) -> Result<bool> {
    // Only a scavenge changes what is below the cut, and it holds the checkpoint lock, which
    // the caller holds now: the cut is stale only if a scavenge swapped a segment in before.
    let index = read_index(index);
    if index.generation() != cut.generation {
        return Err(Error::io(
            tmp,
            io::Error::other("a scavenge changed the index after the cut; not written"),
        ));
    }
    Ok(index.has_holes())
}

/// Takes the index read lock, for one short stretch.
fn read_index(index: &RwLock<Index>) -> RwLockReadGuard<'_, Index> {
    index.read().expect("index lock")
}

/// `0..len` in ranges of at most [`STRETCH_VALUES`], one read lock each.
fn stretches(len: usize) -> impl Iterator<Item = Range<usize>> {
    (0..len)
        .step_by(STRETCH_VALUES)
        .map(move |start| start..(start + STRETCH_VALUES).min(len))
}

/// Writes a checkpoint's sections in file order. Each stretch is encoded into `bytes` under
/// the index read lock and written after the lock is released.
struct SectionWriter<'a> {
    out: CrcWriter<BufWriter<Sequential>>,
    /// One stretch's encoded values.
    bytes: Vec<u8>,
    index: &'a RwLock<Index>,
    cut: &'a Cut,
    /// Whether to write the layout with holes ([`MAGIC_WITH_HOLES`]).
    holes: bool,
}

impl<'a> SectionWriter<'a> {
    /// A writer at the start of `file`, with a running checksum.
    fn new(file: FileHandle, index: &'a RwLock<Index>, cut: &'a Cut, holes: bool) -> Self {
        SectionWriter {
            out: CrcWriter {
                inner: BufWriter::with_capacity(1 << 20, Sequential { file, offset: 0 }),
                crc: 0,
                courtesy: Courtesy::default(),
            },
            bytes: Vec::with_capacity(STRETCH_VALUES * 16),
            index,
            cut,
            holes,
        }
    }

    /// Writes the magic, the counts and (with holes) the head, then each covered segment's
    /// first position and bytes covered.
    fn header(&mut self) -> io::Result<()> {
        let (cut, out) = (self.cut, &mut self.out);
        out.put(if self.holes {
            &MAGIC_WITH_HOLES
        } else {
            &MAGIC
        })?;
        out.put(&cut.events.to_le_bytes())?;
        out.put(&cut.seed.to_le_bytes())?;
        out.put(&(cut.slots as u64).to_le_bytes())?;
        out.put(&(cut.segments.len() as u32).to_le_bytes())?;
        if self.holes {
            out.put(&cut.head.to_le_bytes())?;
        }
        for (first_position, covered) in &cut.segments {
            out.put(&first_position.to_le_bytes())?;
            out.put(&covered.to_le_bytes())?;
        }
        Ok(())
    }

    /// Writes the id of every covered slot.
    fn ids(&mut self) -> io::Result<()> {
        for range in stretches(self.cut.events as usize) {
            self.bytes.clear();
            self.bytes
                .extend_from_slice(read_index(self.index).ids()[range].as_flattened());
            self.out.put(&self.bytes)?;
        }
        Ok(())
    }

    /// Writes the record offset of every covered slot.
    fn offsets(&mut self) -> io::Result<()> {
        for range in stretches(self.cut.events as usize) {
            self.bytes.clear();
            read_index(self.index).offsets()[range]
                .iter()
                .for_each(|v| self.bytes.extend_from_slice(&v.to_le_bytes()));
            self.out.put(&self.bytes)?;
        }
        Ok(())
    }

    /// Writes the id table's slots as they were at the cut; if the table grows meanwhile, its
    /// layout at the cut's size is recreated from the ids (rare: the table doubles).
    fn slots(&mut self) -> io::Result<()> {
        let mut recreated: Option<Vec<u64>> = None;
        for range in stretches(self.cut.slots) {
            self.bytes.clear();
            if recreated.is_none() {
                let guard = read_index(self.index);
                let table = guard.id_table();
                if table.slot_count() == self.cut.slots {
                    table
                        .slots_before(range.clone(), self.cut.events)
                        .for_each(|v| self.bytes.extend_from_slice(&v.to_le_bytes()));
                } else {
                    drop(guard);
                    recreated = Some(recreate_slots(self.index, self.cut));
                }
            }
            if let Some(slots) = &recreated {
                slots[range]
                    .iter()
                    .for_each(|v| self.bytes.extend_from_slice(&v.to_le_bytes()));
            }
            self.out.put(&self.bytes)?;
        }
        Ok(())
    }

    /// Writes the count and the explicit positions of the first slots (with holes only).
    fn sparse_positions(&mut self) -> io::Result<()> {
        // They are below the cut: appends only add dense slots, and a scavenge cannot run
        // meanwhile.
        let sparse_len = read_index(self.index)
            .sparse()
            .0
            .len()
            .min(self.cut.events as usize);
        self.out.put(&(sparse_len as u64).to_le_bytes())?;
        for range in stretches(sparse_len) {
            self.bytes.clear();
            read_index(self.index)
                .sparse()
                .0
                .range(range)
                .for_each(|v| self.bytes.extend_from_slice(&v.to_le_bytes()));
            self.out.put(&self.bytes)?;
        }
        Ok(())
    }

    /// Writes the stream count, then the streams in creation order, each one's positions
    /// below the cut (later streams, and later events of these, are past it).
    fn streams(&mut self) -> io::Result<()> {
        self.out.put(&(self.cut.streams as u64).to_le_bytes())?;
        let mut next = StreamCursor { stream: 0, from: 0 };
        while next.stream < self.cut.streams {
            self.bytes.clear();
            next.encode_stretch(
                &read_index(self.index),
                self.cut,
                self.holes,
                &mut self.bytes,
            );
            self.out.put(&self.bytes)?;
        }
        Ok(())
    }

    /// Appends the CRC32C of everything written so far and fsyncs the file.
    fn finish(self) -> io::Result<()> {
        let crc = self.out.crc;
        let mut file = self.out.inner.into_inner().map_err(|e| e.into_error())?;
        file.write_all(&crc.to_le_bytes())?;
        file.file.sync_data()
    }
}

/// How far the streams section has been encoded: the next stream, and the next of its
/// positions (0: its name, first version and count come first).
struct StreamCursor {
    stream: usize,
    from: usize,
}

impl StreamCursor {
    /// Encodes streams from the cursor on into `bytes`, about [`STRETCH_VALUES`] positions
    /// (a stream without positions below the cut counting one), and advances the cursor.
    fn encode_stretch(&mut self, index: &Index, cut: &Cut, holes: bool, bytes: &mut Vec<u8>) {
        let mut budget = STRETCH_VALUES;
        while self.stream < cut.streams && budget > 0 {
            let (name, positions) = index.stream_at(self.stream).expect("streams only grow");
            let covered = positions.partition_point(|&p| p < cut.head);
            if self.from == 0 {
                bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
                bytes.extend_from_slice(name.as_bytes());
                if holes {
                    bytes.extend_from_slice(&index.first_version(name).to_le_bytes());
                }
                bytes.extend_from_slice(&(covered as u64).to_le_bytes());
            }
            let to = covered.min(self.from + budget);
            positions[self.from..to]
                .iter()
                .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            budget -= (to - self.from).max(1).min(budget);
            if to == covered {
                self.stream += 1;
                self.from = 0;
            } else {
                self.from = to;
            }
        }
    }
}

/// The id table's slots at the cut's size, holding the cut's positions: the ids placed in
/// position order, read in stretches under the lock.
fn recreate_slots(index: &RwLock<Index>, cut: &Cut) -> Vec<u64> {
    let mut slots = vec![0u64; cut.slots];
    for range in stretches(cut.events as usize) {
        let start = range.start;
        let index = read_index(index);
        for (offset, id) in index.ids()[range].iter().enumerate() {
            crate::index::place_in(cut.seed, &mut slots, id, (start + offset) as u64);
        }
    }
    slots
}

/// Renames the temporary checkpoint into place and fsyncs the directory.
pub fn install(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let path = checkpoint_path(dir);
    // Held open across the rename, so that replacing it does not free its blocks at once
    // (half a gigabyte at 10M events, freed — and, with `discard`, trimmed — in one journal
    // commit that stalled the machine); they are given back in steps below.
    let old = vfs.open(&path, true).ok();
    vfs.rename(&dir.join(CHECKPOINT_TMP_FILE), &path)
        .map_err(|e| Error::io(&path, e))?;
    fsync_dir(vfs, dir)?;
    if let Some(old) = old {
        crate::background::free_in_steps(&*old);
    }
    Ok(())
}

/// Reads a checkpoint front to back with bounds checks and a running checksum.
struct Reader {
    file: io::BufReader<Sequential>,
    crc: u32,
    /// Bytes left before the trailing checksum.
    remaining: u64,
}

type Load<T> = std::result::Result<T, String>;

impl Reader {
    /// Opens the checkpoint at `path` for reading up to its trailer; `Ok(None)` when there is none.
    fn open(vfs: &dyn Vfs, path: &Path) -> Load<Option<Reader>> {
        let file = match vfs.open(path, false) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        let len = file.len().map_err(|e| e.to_string())?;
        let Some(remaining) = len.checked_sub(4) else {
            return Err("checkpoint is truncated".into());
        };
        Ok(Some(Reader {
            file: io::BufReader::with_capacity(1 << 20, Sequential { file, offset: 0 }),
            crc: 0,
            remaining,
        }))
    }

    /// Checks that every byte before the trailer was read and that the trailer's CRC32C matches.
    fn check_trailer(&mut self) -> Load<()> {
        if self.remaining != 0 {
            return Err("checkpoint has trailing bytes".into());
        }
        let mut trailer = [0u8; 4];
        self.file
            .read_exact(&mut trailer)
            .map_err(|e| e.to_string())?;
        if u32::from_le_bytes(trailer) != self.crc {
            return Err("checkpoint checksum mismatch".into());
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Load<()> {
        if buf.len() as u64 > self.remaining {
            return Err("checkpoint is truncated".into());
        }
        self.file
            .read_exact(buf)
            .map_err(|e| format!("cannot read the checkpoint: {e}"))?;
        self.remaining -= buf.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }
    fn array<const N: usize>(&mut self) -> Load<[u8; N]> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }
    fn u16(&mut self) -> Load<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Load<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Load<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Checks that `count` items of `size` bytes can still follow, before allocating for them.
    fn expect(&self, count: u64, size: u64) -> Load<usize> {
        match count.checked_mul(size) {
            Some(bytes) if bytes <= self.remaining => Ok(count as usize),
            _ => Err("checkpoint is truncated or a count is corrupt".into()),
        }
    }
    fn u64s(&mut self, count: usize) -> Load<Vec<u64>> {
        let mut values = Vec::with_capacity(count);
        let mut bytes = vec![0u8; CHUNK_VALUES.min(count) * 8];
        while values.len() < count {
            let n = (count - values.len()).min(CHUNK_VALUES);
            self.fill(&mut bytes[..n * 8])?;
            values.extend(
                bytes[..n * 8]
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8"))),
            );
        }
        Ok(values)
    }
    fn u32s(&mut self, count: usize) -> Load<Vec<u32>> {
        let mut values = Vec::with_capacity(count);
        let mut bytes = vec![0u8; CHUNK_VALUES.min(count) * 4];
        while values.len() < count {
            let n = (count - values.len()).min(CHUNK_VALUES);
            self.fill(&mut bytes[..n * 4])?;
            values.extend(
                bytes[..n * 4]
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4"))),
            );
        }
        Ok(values)
    }
}

/// What a checkpoint whose checksum holds says about the log, whether or not it can be used:
/// the engine writes one only after the bytes it covers are durable, so it is evidence that
/// its events were acknowledged. Open uses it to tell media damage in acknowledged bytes from
/// a torn tail.
#[derive(Debug, Clone)]
pub struct Claim {
    pub events: u64,
    /// (first position, bytes covered) per segment.
    pub segments: Vec<(u64, u64)>,
    /// Ids at a few positions, to tell whether the checkpoint belongs to this log.
    pub samples: Vec<(u64, [u8; 16])>,
}

/// What [`load`] found.
#[derive(Default)]
pub struct Loaded {
    /// Where to resume the scan, when the checkpoint is usable.
    pub resume: Option<Resume>,
    /// Why a checkpoint on disk is not used.
    pub rejected: Option<String>,
    pub claim: Option<Claim>,
}

/// Ids sampled for a [`Claim`].
const CLAIM_SAMPLES: u64 = 64;

/// Loads the checkpoint of `dir` and checks it against the listed segments.
pub fn load(vfs: &dyn Vfs, dir: &Path, segments: &[(u64, PathBuf)]) -> Loaded {
    let mut claim = None;
    match load_checked(vfs, dir, segments, &mut claim) {
        Ok(resume) => Loaded {
            resume,
            rejected: None,
            claim,
        },
        Err(reason) => Loaded {
            resume: None,
            rejected: Some(reason),
            claim,
        },
    }
}

/// `Ok(None)` when there is no checkpoint; `Err(reason)` when it is unusable (the caller
/// replays fully). Sets `claim` once the checksum is verified.
///
/// The checks run in this order, the first failure giving the reason: the file's framing and
/// header, the sections read in full, the trailing checksum, the slot positions, then (with
/// `claim` set) the segments' order, the segments against the log, the offsets, the id table,
/// the streams and the log's last covered record.
fn load_checked(
    vfs: &dyn Vfs,
    dir: &Path,
    segments: &[(u64, PathBuf)],
    claim: &mut Option<Claim>,
) -> Load<Option<Resume>> {
    let Some(mut reader) = Reader::open(vfs, &checkpoint_path(dir))? else {
        return Ok(None);
    };
    let header = Header::read(&mut reader, segments.len())?;
    let body = Body::read(&mut reader, &header)?;
    reader.check_trailer()?;
    let Body {
        covered,
        ids,
        offsets,
        slots,
        sparse,
        streams,
    } = body;
    let Header {
        events,
        seed,
        head,
        segment_count,
        ..
    } = header;
    let dense_base = dense_base(events, head, &sparse)?;
    let positions = SlotPositions {
        sparse: &sparse,
        dense_base,
    };
    *claim = Some(positions.claim(events, &covered, &ids));
    check_segment_order(&covered, head)?;
    // The bytes are what was written; now check they describe this log.
    let mut index = Index::default();
    index.segments = open_covered(vfs, &covered, segments)?;
    check_offsets(&offsets, &index.segments, &positions)?;
    let table = IdTable::from_parts(seed, slots, &ids)?;
    let last_position = events.checked_sub(1).map(|slot| positions.of(slot));
    index.extend_from_checkpoint(ids, offsets, table, sparse, dense_base);
    load_streams(&mut index, streams, head, events)?;
    if let Some(position) = last_position {
        check_last_record(&index, position)?;
    }
    let segment = segment_count - 1;
    let offset = index.segments[segment].visible_len;
    Ok(Some(Resume {
        index,
        segment,
        offset,
    }))
}

/// A checkpoint's fixed-size header.
struct Header {
    /// Whether it is the layout with holes ([`MAGIC_WITH_HOLES`]).
    holes: bool,
    /// Live events (slots) covered.
    events: u64,
    seed: u64,
    slot_count: u64,
    segment_count: usize,
    /// The next position at the cut (`events` without holes).
    head: u64,
}

impl Header {
    /// Reads the header and checks that it covers between one and `listed` segments.
    fn read(reader: &mut Reader, listed: usize) -> Load<Header> {
        let holes = match reader.array::<8>()? {
            MAGIC => false,
            MAGIC_WITH_HOLES => true,
            _ => return Err("not a checkpoint of this format".into()),
        };
        let events = reader.u64()?;
        let seed = reader.u64()?;
        let slot_count = reader.u64()?;
        let segment_count = reader.u32()? as usize;
        let head = if holes { reader.u64()? } else { events };
        if segment_count == 0 || segment_count > listed {
            return Err(format!(
                "checkpoint covers {segment_count} segments, the log has {listed}"
            ));
        }
        Ok(Header {
            holes,
            events,
            seed,
            slot_count,
            segment_count,
            head,
        })
    }
}

/// A stream as a checkpoint stores it: name bytes, first version, positions.
type StoredStream = (Vec<u8>, u64, Vec<u64>);

/// The sections after a checkpoint's header, as read (bounds checked, not yet validated).
struct Body {
    /// (first position, bytes covered) per segment.
    covered: Vec<(u64, u64)>,
    ids: Vec<[u8; 16]>,
    offsets: Vec<u32>,
    slots: Vec<u64>,
    /// Explicit positions of the first slots (empty without holes).
    sparse: Vec<u64>,
    streams: Vec<StoredStream>,
}

impl Body {
    /// Reads every section after the header, in file order, up to the trailer.
    fn read(reader: &mut Reader, header: &Header) -> Load<Body> {
        let mut covered = Vec::with_capacity(header.segment_count);
        for _ in 0..header.segment_count {
            covered.push((reader.u64()?, reader.u64()?));
        }
        let count = reader.expect(header.events, 16 + 4)?;
        let mut ids = vec![[0u8; 16]; count];
        reader.fill(ids.as_flattened_mut())?;
        let offsets = reader.u32s(count)?;
        let slot_count = reader.expect(header.slot_count, 8)?;
        let slots = reader.u64s(slot_count)?;
        let sparse = if header.holes {
            let sparse_len = reader.u64()?;
            let sparse_len = reader.expect(sparse_len, 8)?;
            reader.u64s(sparse_len)?
        } else {
            Vec::new()
        };
        let streams = read_streams(reader, header.holes)?;
        Ok(Body {
            covered,
            ids,
            offsets,
            slots,
            sparse,
            streams,
        })
    }
}

/// Reads the streams section: a count, then each stream's name, first version (with holes)
/// and positions.
fn read_streams(reader: &mut Reader, holes: bool) -> Load<Vec<StoredStream>> {
    let stream_count = reader.u64()?;
    let mut streams = Vec::new();
    for _ in 0..stream_count {
        let name_len = reader.u16()? as usize;
        let mut name = vec![0u8; name_len];
        reader.fill(&mut name)?;
        let first_version = if holes { reader.u64()? } else { 0 };
        let positions = reader.u64()?;
        let positions = reader.expect(positions, 8)?;
        streams.push((name, first_version, reader.u64s(positions)?));
    }
    Ok(streams)
}

/// The position of the first dense slot, checking that the explicit positions increase
/// strictly and stay below it.
fn dense_base(events: u64, head: u64, sparse: &[u64]) -> Load<u64> {
    // The positions of the slots: explicit for the first `sparse.len()`, then consecutive up
    // to the head.
    let dense_events = events.checked_sub(sparse.len() as u64);
    let dense_base = dense_events.and_then(|dense| head.checked_sub(dense));
    dense_base
        .filter(|&base| {
            sparse.windows(2).all(|w| w[0] < w[1]) && sparse.last().is_none_or(|&p| p < base)
        })
        .ok_or_else(|| "checkpoint positions out of order".into())
}

/// The positions of a checkpoint's slots: explicit for the first `sparse.len()`, then
/// consecutive from `dense_base`.
struct SlotPositions<'a> {
    sparse: &'a [u64],
    dense_base: u64,
}

impl SlotPositions<'_> {
    /// The position of `slot`.
    fn of(&self, slot: u64) -> u64 {
        match self.sparse.get(slot as usize) {
            Some(&position) => position,
            None => self.dense_base + (slot - self.sparse.len() as u64),
        }
    }

    /// What the checkpoint claims about the log: its segments and a sample of its ids, the
    /// last one included.
    fn claim(&self, events: u64, covered: &[(u64, u64)], ids: &[[u8; 16]]) -> Claim {
        let step = (events / CLAIM_SAMPLES).max(1);
        let mut samples: Vec<(u64, [u8; 16])> = (0..events)
            .step_by(step as usize)
            .map(|slot| (self.of(slot), ids[slot as usize]))
            .collect();
        if events > 0 {
            samples.push((self.of(events - 1), ids[events as usize - 1]));
        }
        Claim {
            events,
            segments: covered.to_vec(),
            samples,
        }
    }
}

/// Checks that the covered segments start in increasing order, the first at 0, each at or
/// before the head and covering at least a segment header.
fn check_segment_order(covered: &[(u64, u64)], head: u64) -> Load<()> {
    if covered.first().is_some_and(|s| s.0 != 0)
        || covered.windows(2).any(|w| w[0].0 >= w[1].0)
        || covered
            .iter()
            .any(|s| s.0 > head || s.1 < SEGMENT_HEADER_LEN)
    {
        return Err("checkpoint segments out of order".into());
    }
    Ok(())
}

/// Opens the log's segments that the checkpoint covers, checking each one's first position
/// against the listed segment and that the file holds the bytes covered.
fn open_covered(
    vfs: &dyn Vfs,
    covered: &[(u64, u64)],
    segments: &[(u64, PathBuf)],
) -> Load<Vec<SegmentEntry>> {
    let mut entries = Vec::with_capacity(covered.len());
    for (&(first_position, visible_len), listed) in covered.iter().zip(segments) {
        if first_position != listed.0 {
            return Err(format!(
                "checkpoint names a segment starting at {first_position}, the log has {}",
                listed.0
            ));
        }
        let file = vfs
            .open(&listed.1, false)
            .map_err(|e| format!("{}: {e}", listed.1.display()))?;
        let file_len = file.len().map_err(|e| e.to_string())?;
        if file_len < visible_len {
            return Err(format!(
                "{} is {file_len} bytes, shorter than the {visible_len} the checkpoint covers",
                listed.1.display()
            ));
        }
        entries.push(SegmentEntry {
            first_position,
            path: listed.1.clone(),
            file,
            visible_len,
        });
    }
    Ok(entries)
}

/// Checks that offsets increase strictly within a segment, start after its header and stay
/// below what is covered: reads compute record lengths from them.
fn check_offsets(
    offsets: &[u32],
    segments: &[SegmentEntry],
    positions: &SlotPositions<'_>,
) -> Load<()> {
    let mut segment = 0usize;
    let mut previous: Option<u32> = None;
    for (slot, &offset) in offsets.iter().enumerate() {
        let position = positions.of(slot as u64);
        while segments
            .get(segment + 1)
            .is_some_and(|s| s.first_position <= position)
        {
            segment += 1;
            previous = None;
        }
        if u64::from(offset) >= segments[segment].visible_len {
            return Err(format!("offset of position {position} is past its segment"));
        }
        if u64::from(offset) < SEGMENT_HEADER_LEN || previous.is_some_and(|p| p >= offset) {
            return Err(format!("offset of position {position} is out of order"));
        }
        previous = Some(offset);
    }
    Ok(())
}

/// Checks each stream (UTF-8 name, positions increasing and below `head`) and adds it to
/// `index`, then checks that the streams hold exactly `events` positions between them.
fn load_streams(index: &mut Index, streams: Vec<StoredStream>, head: u64, events: u64) -> Load<()> {
    let mut positions_seen = 0u64;
    for (name, first_version, positions) in streams {
        let name = String::from_utf8(name).map_err(|_| "stream name is not UTF-8")?;
        if (positions.is_empty() && first_version == 0)
            || positions.windows(2).any(|w| w[0] >= w[1])
            || positions.last().is_some_and(|&p| p >= head)
        {
            return Err("stream positions out of order or range".into());
        }
        positions_seen += positions.len() as u64;
        let name = name.into_boxed_str();
        index.set_first_version(name.clone(), first_version);
        index.set_stream(name, positions);
    }
    if positions_seen != events {
        return Err("checkpoint streams do not cover its events exactly".into());
    }
    Ok(())
}

/// The log must hold, at the checkpoint's last position, a valid record with the checkpoint's id.
fn check_last_record(index: &Index, position: u64) -> Load<()> {
    let location = index
        .location(position)
        .ok_or("last position has no location")?;
    let mut bytes = vec![0u8; location.len];
    let got =
        read_at_most(location.file, &mut bytes, location.offset).map_err(|e| e.to_string())?;
    match decode_record(&bytes[..got]) {
        Decoded::Record(view)
            if view.fields.position == position
                && Some(view.fields.id) == index.id_at(position)
                && view.record_len == location.len =>
        {
            Ok(())
        }
        _ => Err(format!(
            "the log does not hold the checkpoint's last event at position {position}"
        )),
    }
}
