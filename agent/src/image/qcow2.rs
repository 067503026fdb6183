//! A streaming qcow2 (v2 and v3) to raw converter with no temporary copy.
//!
//! The file is read once, front to back. Every piece of it that matters (the
//! L1 table, the L2 tables, data clusters, compressed clusters) is an *item*
//! keyed by its host offset; as the stream passes an item, it is processed:
//! tables add more items, data clusters are written to their guest offsets,
//! and unallocated or zero clusters become zeroed ranges.
//!
//! Two ways to learn the items:
//! * **planned** ([`Plan::build`]): when the source allows random access,
//!   the header, L1 and every L2 table are read first (they are small), all
//!   checks run before anything is written, and the stream pass then only
//!   has to write clusters; tables are re-checked (digest) when they pass in
//!   the stream, so the checksum covers the metadata that was used.
//! * **in stream order** (no plan): tables are parsed as they pass; a table
//!   or cluster that lies *before* the table mapping it cannot be reached
//!   any more and the image is refused as not streamable.
//!
//! Refused before anything is written: backing files, external data files,
//! encryption, unknown incompatible features, extended L2 entries, the
//! corrupt bit, and inconsistent headers (cluster_bits out of range, tables
//! beyond the end of the file, overlapping tables, an oversized L1 table).
//! Format facts come from QEMU's `docs/interop/qcow2.txt`.

use std::collections::BTreeMap;
use std::io::Read;

use sha2::Digest as _;

use super::sink::{GuestSink, SinkError};

/// Magic at offset 0.
pub const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Bytes of the fixed header needed to know the cluster size (v3 header is 104).
pub const MIN_HEADER: usize = 104;
const V2_HEADER: usize = 72;
/// Largest L1 table accepted (bytes).
pub const MAX_L1_BYTES: u64 = 8 << 20;
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
/// Offsets are 56-bit in qcow2.
const MAX_OFFSET: u64 = (1 << 56) - 1;

const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Why a qcow2 image cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// The image is unsafe, inconsistent or uses an unsupported feature.
    #[error("invalid qcow2 image: {0}")]
    Invalid(String),
    /// The layout cannot be converted from a forward-only stream.
    #[error("this qcow2 image cannot be converted while streaming: {0}. Serve it from a server that supports HTTP Range requests (or file://) without outer compression, or rewrite it with `qemu-img convert -O qcow2` (which puts tables before their data)")]
    NotStreamable(String),
    /// The image ended early.
    #[error("qcow2 image truncated: {0}")]
    Truncated(String),
    /// Reading the image bytes failed.
    #[error("reading the image failed: {0}")]
    Read(#[source] std::io::Error),
    /// Writing to the disk failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

fn invalid(msg: impl Into<String>) -> Qcow2Error {
    Qcow2Error::Invalid(msg.into())
}

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCompression {
    /// Raw deflate (the default).
    Deflate,
    /// Zstandard (`compression_type` 1).
    Zstd,
}

/// The checked qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Entries in the L1 table.
    pub l1_size: u64,
    /// Host offset of the L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u64,
    /// Internal snapshots (their data is not written, only the active layer).
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// How compressed clusters are compressed.
    pub compression: ClusterCompression,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// The cluster size announced by the first [`MIN_HEADER`] bytes.
pub fn cluster_size_of(head: &[u8]) -> Result<u64, Qcow2Error> {
    if head.len() < V2_HEADER || &head[..4] != MAGIC {
        return Err(Qcow2Error::Truncated("the header is incomplete".into()));
    }
    let bits = be32(head, 20);
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) {
        return Err(invalid(format!(
            "cluster_bits {bits} is out of range ({MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS})"
        )));
    }
    Ok(1 << bits)
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries per L2 table.
    fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Guest bytes covered by one L2 table.
    fn l2_coverage(&self) -> u64 {
        self.l2_entries() * self.cluster_size()
    }

    /// Parses and checks the header from the first cluster (or the whole file
    /// when it is shorter); `file_len` is the file's length when known.
    pub fn parse(cluster: &[u8], file_len: Option<u64>) -> Result<Self, Qcow2Error> {
        let cs = cluster_size_of(cluster)?;
        let version = be32(cluster, 4);
        if version != 2 && version != 3 {
            return Err(invalid(format!(
                "version {version} is not supported (only 2 and 3)"
            )));
        }
        let backing_file_offset = be64(cluster, 8);
        if backing_file_offset != 0 {
            return Err(invalid(
                "the image has a backing file; a deployed image must be self-contained (CVE-2024-44082 class). Flatten it with `qemu-img convert -O qcow2` first",
            ));
        }
        let cluster_bits = be32(cluster, 20);
        let size = be64(cluster, 24);
        let crypt_method = be32(cluster, 32);
        if crypt_method != 0 {
            return Err(invalid(format!(
                "the image is encrypted (crypt_method {crypt_method}); deploy an unencrypted image"
            )));
        }
        let l1_size = u64::from(be32(cluster, 36));
        let l1_table_offset = be64(cluster, 40);
        let refcount_table_offset = be64(cluster, 48);
        let refcount_table_clusters = u64::from(be32(cluster, 56));
        let nb_snapshots = be32(cluster, 60);
        let snapshots_offset = be64(cluster, 64);
        let mut compression = ClusterCompression::Deflate;
        let mut header_length = V2_HEADER as u64;
        if version == 3 {
            if cluster.len() < MIN_HEADER {
                return Err(Qcow2Error::Truncated("the v3 header is incomplete".into()));
            }
            let incompatible = be64(cluster, 72);
            header_length = u64::from(be32(cluster, 100));
            if header_length < MIN_HEADER as u64 || header_length > cs {
                return Err(invalid(format!(
                    "header_length {header_length} is out of range"
                )));
            }
            if incompatible & INCOMPAT_CORRUPT != 0 {
                return Err(invalid(
                    "the image is marked corrupt; repair it with `qemu-img check -r all`",
                ));
            }
            if incompatible & INCOMPAT_DATA_FILE != 0 {
                return Err(invalid(
                    "the image keeps its data in an external data file; deploy a self-contained image (`qemu-img convert -O qcow2`)",
                ));
            }
            if incompatible & INCOMPAT_EXTL2 != 0 {
                return Err(invalid(
                    "the image uses extended L2 entries (subclusters), which this agent does not read; rewrite it with `qemu-img convert -O qcow2`",
                ));
            }
            let known = INCOMPAT_DIRTY
                | INCOMPAT_CORRUPT
                | INCOMPAT_DATA_FILE
                | INCOMPAT_COMPRESSION
                | INCOMPAT_EXTL2;
            if incompatible & !known != 0 {
                return Err(invalid(format!(
                    "the image uses unknown incompatible features (bits {:#x})",
                    incompatible & !known
                )));
            }
            if incompatible & INCOMPAT_COMPRESSION != 0 {
                if header_length < 105 || cluster.len() < 105 {
                    return Err(invalid(
                        "the compression type bit is set but the header has no compression_type",
                    ));
                }
                compression = match cluster[104] {
                    0 => ClusterCompression::Deflate,
                    1 => ClusterCompression::Zstd,
                    t => return Err(invalid(format!("unknown compression_type {t}"))),
                };
            } else if header_length >= 105 && cluster.len() >= 105 && cluster[104] != 0 {
                return Err(invalid(
                    "compression_type is set but the incompatible feature bit is not",
                ));
            }
        }
        let header = Self {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            nb_snapshots,
            snapshots_offset,
            compression,
        };
        header.check_extensions(cluster, header_length)?;
        header.check_geometry(file_len)?;
        Ok(header)
    }

    fn check_extensions(&self, cluster: &[u8], header_length: u64) -> Result<(), Qcow2Error> {
        let end = cluster.len().min(self.cluster_size() as usize);
        let mut at = header_length as usize;
        loop {
            if at + 8 > end {
                return Err(Qcow2Error::Truncated(
                    "the header extensions run past the first cluster".into(),
                ));
            }
            let kind = be32(cluster, at);
            let len = be32(cluster, at + 4) as usize;
            if kind == EXT_END {
                return Ok(());
            }
            let padded = len.div_ceil(8) * 8;
            if at + 8 + padded > end {
                return Err(invalid(format!(
                    "header extension {kind:#x} runs past the first cluster"
                )));
            }
            match kind {
                EXT_DATA_FILE => {
                    return Err(invalid(
                        "the image names an external data file; deploy a self-contained image",
                    ))
                }
                EXT_CRYPTO => {
                    return Err(invalid(
                        "the image has an encryption header; deploy an unencrypted image",
                    ))
                }
                EXT_BACKING_FORMAT => {
                    return Err(invalid(
                        "the image names a backing file format; deploy a self-contained image",
                    ))
                }
                _ => {}
            }
            at += 8 + padded;
        }
    }

    fn check_geometry(&self, file_len: Option<u64>) -> Result<(), Qcow2Error> {
        let cs = self.cluster_size();
        if self.size > MAX_OFFSET {
            return Err(invalid(format!("virtual size {} is too large", self.size)));
        }
        let needed = self.size.div_ceil(self.l2_coverage());
        if self.l1_size < needed {
            return Err(invalid(format!(
                "the L1 table has {} entries but the virtual size needs {needed}",
                self.l1_size
            )));
        }
        let l1_bytes = self.l1_size * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(invalid(format!(
                "the L1 table is {l1_bytes} bytes, more than the {MAX_L1_BYTES} accepted"
            )));
        }
        let ranges = [
            ("L1 table", self.l1_table_offset, l1_bytes, self.l1_size > 0),
            (
                "refcount table",
                self.refcount_table_offset,
                self.refcount_table_clusters * cs,
                true,
            ),
        ];
        for (what, offset, len, used) in ranges {
            if !used {
                continue;
            }
            if !offset.is_multiple_of(cs) || offset < cs {
                return Err(invalid(format!(
                    "the {what} offset {offset:#x} is not a cluster boundary after the header"
                )));
            }
            if offset.saturating_add(len) > MAX_OFFSET {
                return Err(invalid(format!("the {what} lies beyond any valid offset")));
            }
            if let Some(file_len) = file_len {
                if offset + len > file_len {
                    return Err(invalid(format!(
                        "the {what} ({len} bytes at {offset:#x}) lies beyond the end of the file ({file_len} bytes)"
                    )));
                }
            }
        }
        let (a, b) = (
            (self.l1_table_offset, self.l1_table_offset + l1_bytes),
            (
                self.refcount_table_offset,
                self.refcount_table_offset + self.refcount_table_clusters * cs,
            ),
        );
        if self.l1_size > 0 && a.0 < b.1 && b.0 < a.1 {
            return Err(invalid("the L1 table overlaps the refcount table"));
        }
        Ok(())
    }
}

/// Guest offsets fed from one host cluster (usually one).
#[derive(Debug, Clone)]
enum Guests {
    One(u64),
    Many(Vec<u64>),
}

impl Guests {
    fn push(&mut self, g: u64) {
        match self {
            Self::One(a) => *self = Self::Many(vec![*a, g]),
            Self::Many(v) => v.push(g),
        }
    }

    fn list(&self) -> &[u64] {
        match self {
            Self::One(a) => std::slice::from_ref(a),
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone)]
enum Item {
    L1 { check: Option<[u8; 32]> },
    L2 { index: u64, check: Option<[u8; 32]> },
    Data(Guests),
    Compressed { guests: Guests, len: u64 },
}

/// Everything known about the image's layout, keyed by host offset.
#[derive(Debug, Clone)]
struct Layout {
    header: Header,
    file_len: Option<u64>,
    items: BTreeMap<u64, Item>,
    /// Table ranges (start → end), including the header cluster.
    tables: BTreeMap<u64, u64>,
    /// Guest ranges to zero, coalesced.
    zeros: Vec<(u64, u64)>,
}

fn digest(b: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(b).into()
}

impl Layout {
    fn new(header: Header, file_len: Option<u64>) -> Result<Self, Qcow2Error> {
        let cs = header.cluster_size();
        let mut l = Self {
            header,
            file_len,
            items: BTreeMap::new(),
            tables: BTreeMap::new(),
            zeros: Vec::new(),
        };
        l.add_table("header", 0, cs)?;
        let h = l.header.clone();
        if h.refcount_table_clusters > 0 {
            l.add_table(
                "refcount table",
                h.refcount_table_offset,
                h.refcount_table_clusters * cs,
            )?;
        }
        Ok(l)
    }

    fn item_len(&self, item: &Item) -> u64 {
        match item {
            Item::L1 { .. } => self.header.l1_size * 8,
            Item::L2 { .. } | Item::Data(_) => self.header.cluster_size(),
            Item::Compressed { len, .. } => *len,
        }
    }

    fn hits_table(&self, start: u64, end: u64) -> Option<u64> {
        self.tables
            .range(..end)
            .next_back()
            .filter(|(_, &e)| e > start)
            .map(|(&s, _)| s)
    }

    fn add_table(&mut self, what: &str, start: u64, len: u64) -> Result<(), Qcow2Error> {
        let end = start + len;
        if let Some(s) = self.hits_table(start, end) {
            return Err(invalid(format!(
                "the {what} at {start:#x} overlaps another table at {s:#x}"
            )));
        }
        if let Some((&s, item)) = self.items.range(..end).next_back() {
            if s + self.item_len(item) > start {
                return Err(invalid(format!(
                    "the {what} at {start:#x} overlaps data at {s:#x}"
                )));
            }
        }
        self.tables.insert(start, end);
        Ok(())
    }

    fn add_zero(&mut self, guest: u64, len: u64) {
        let len = len.min(self.header.size.saturating_sub(guest));
        if len == 0 {
            return;
        }
        if let Some(last) = self.zeros.last_mut() {
            if last.0 + last.1 == guest {
                last.1 += len;
                return;
            }
        }
        self.zeros.push((guest, len));
    }

    fn check_in_file(&self, what: &str, start: u64, len: u64) -> Result<(), Qcow2Error> {
        if start > MAX_OFFSET || start.saturating_add(len) > MAX_OFFSET {
            return Err(invalid(format!("the {what} offset {start:#x} is invalid")));
        }
        if let Some(file_len) = self.file_len {
            if start >= file_len {
                return Err(invalid(format!(
                    "the {what} at {start:#x} lies beyond the end of the file ({file_len} bytes)"
                )));
            }
        }
        Ok(())
    }

    fn add_l1(&mut self, check: Option<[u8; 32]>) -> Result<(), Qcow2Error> {
        let (off, len) = (self.header.l1_table_offset, self.header.l1_size * 8);
        if len == 0 {
            self.add_zero(0, self.header.size);
            return Ok(());
        }
        self.add_table("L1 table", off, len)?;
        self.items.insert(off, Item::L1 { check });
        Ok(())
    }

    /// Parses the L1 table; returns the host offsets of the L2 tables it names.
    fn parse_l1(&mut self, table: &[u8]) -> Result<Vec<(u64, u64)>, Qcow2Error> {
        let cov = self.header.l2_coverage();
        let needed = self.header.size.div_ceil(cov);
        let cs = self.header.cluster_size();
        let mut l2s = Vec::new();
        for i in 0..needed {
            let e = be64(table, (i * 8) as usize);
            if e & L1_RESERVED != 0 {
                return Err(invalid(format!(
                    "L1 entry {i} has reserved bits set ({e:#x})"
                )));
            }
            let off = e & L1_OFFSET_MASK;
            if off == 0 {
                self.add_zero(i * cov, cov);
                continue;
            }
            if !off.is_multiple_of(cs) {
                return Err(invalid(format!(
                    "L1 entry {i} points at {off:#x}, not a cluster boundary"
                )));
            }
            self.check_in_file("L2 table", off, cs)?;
            if let Some(file_len) = self.file_len {
                if off + cs > file_len {
                    return Err(invalid(format!(
                        "the L2 table at {off:#x} lies beyond the end of the file"
                    )));
                }
            }
            l2s.push((i, off));
        }
        Ok(l2s)
    }

    fn add_l2(&mut self, index: u64, off: u64, check: Option<[u8; 32]>) -> Result<(), Qcow2Error> {
        let cs = self.header.cluster_size();
        self.add_table("L2 table", off, cs)?;
        self.items.insert(off, Item::L2 { index, check });
        Ok(())
    }

    fn parse_l2(&mut self, index: u64, table: &[u8]) -> Result<(), Qcow2Error> {
        let cs = self.header.cluster_size();
        let base = index * self.header.l2_coverage();
        let x = 62 - (self.header.cluster_bits - 8);
        for j in 0..self.header.l2_entries() {
            let guest = base + j * cs;
            if guest >= self.header.size {
                break;
            }
            let e = be64(table, (j * 8) as usize);
            if e & L2_COMPRESSED != 0 {
                let desc = e & ((1 << 62) - 1);
                let host = desc & ((1u64 << x) - 1);
                let sectors = (desc >> x) + 1;
                let len = sectors * 512 - (host & 511);
                self.check_in_file("compressed cluster", host, len)?;
                if let Some(s) = self.hits_table(host, host + len.min(cs)) {
                    return Err(invalid(format!(
                        "the compressed cluster at {host:#x} overlaps the table at {s:#x}"
                    )));
                }
                match self.items.get_mut(&host) {
                    None => {
                        self.items.insert(
                            host,
                            Item::Compressed {
                                guests: Guests::One(guest),
                                len,
                            },
                        );
                    }
                    Some(Item::Compressed { guests, .. }) => guests.push(guest),
                    Some(_) => {
                        return Err(invalid(format!(
                            "the compressed cluster at {host:#x} overlaps other data"
                        )))
                    }
                }
                continue;
            }
            if e & L2_RESERVED != 0 {
                return Err(invalid(format!(
                    "L2 entry {j} of table {index} has reserved bits set ({e:#x})"
                )));
            }
            let host = e & L2_OFFSET_MASK;
            if e & L2_ZERO != 0 {
                if self.header.version < 3 {
                    return Err(invalid("a v2 image uses the v3 zero-cluster flag"));
                }
                self.add_zero(guest, cs);
                continue;
            }
            if host == 0 {
                self.add_zero(guest, cs);
                continue;
            }
            if !host.is_multiple_of(cs) {
                return Err(invalid(format!(
                    "the data cluster at {host:#x} is not cluster aligned"
                )));
            }
            self.check_in_file("data cluster", host, cs)?;
            if let Some(s) = self.hits_table(host, host + cs) {
                return Err(invalid(format!(
                    "the data cluster at {host:#x} overlaps the table at {s:#x}"
                )));
            }
            match self.items.get_mut(&host) {
                None => {
                    self.items.insert(host, Item::Data(Guests::One(guest)));
                }
                Some(Item::Data(g)) => g.push(guest),
                Some(_) => {
                    return Err(invalid(format!(
                        "the data cluster at {host:#x} overlaps other data"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Random access to the image, for reading its metadata before streaming.
pub trait RangeRead {
    /// Reads exactly `len` bytes at `offset` (fewer only at the end of the file).
    fn read_range(&mut self, offset: u64, len: u64) -> std::io::Result<Vec<u8>>;
}

/// The layout of an image read through random access, checked before any write.
#[derive(Debug, Clone)]
pub struct Plan {
    layout: Layout,
    header_check: [u8; 32],
}

impl Plan {
    /// Reads the header, the L1 table and every L2 table of an image of
    /// `file_len` bytes and checks them all.
    pub fn build(src: &mut dyn RangeRead, file_len: u64) -> Result<Self, Qcow2Error> {
        let head = src
            .read_range(0, MIN_HEADER as u64)
            .map_err(Qcow2Error::Read)?;
        let cs = cluster_size_of(&head)?;
        let cluster = src
            .read_range(0, cs.min(file_len))
            .map_err(Qcow2Error::Read)?;
        let header = Header::parse(&cluster, Some(file_len))?;
        let mut layout = Layout::new(header, Some(file_len))?;
        let l1_bytes = layout.header.l1_size * 8;
        if l1_bytes > 0 {
            let l1 = src
                .read_range(layout.header.l1_table_offset, l1_bytes)
                .map_err(Qcow2Error::Read)?;
            if (l1.len() as u64) < l1_bytes {
                return Err(Qcow2Error::Truncated("the L1 table is incomplete".into()));
            }
            layout.add_l1(Some(digest(&l1)))?;
            for (index, off) in layout.parse_l1(&l1)? {
                let l2 = src.read_range(off, cs).map_err(Qcow2Error::Read)?;
                if (l2.len() as u64) < cs {
                    return Err(Qcow2Error::Truncated(format!(
                        "the L2 table at {off:#x} is incomplete"
                    )));
                }
                layout.add_l2(index, off, Some(digest(&l2)))?;
                layout.parse_l2(index, &l2)?;
            }
        } else {
            layout.add_l1(None)?;
        }
        Ok(Self {
            layout,
            header_check: digest(&cluster),
        })
    }

    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.layout.header
    }
}

/// A forward-only window on the stream: bytes before the window are gone.
#[derive(Debug)]
struct Window<R> {
    reader: R,
    buf: Vec<u8>,
    start: u64,
    eof: bool,
}

impl<R: Read> Window<R> {
    fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Returns up to `len` bytes at host offset `at` (fewer only at the end of the stream).
    fn get(&mut self, at: u64, len: u64) -> Result<&[u8], Qcow2Error> {
        if at < self.start {
            return Err(Qcow2Error::NotStreamable(format!(
                "offset {at:#x} is needed after the stream has passed it"
            )));
        }
        if at >= self.end() {
            let mut skip = at - self.end();
            self.buf.clear();
            self.start = at - skip;
            let mut scratch = vec![0u8; 64 * 1024];
            while skip > 0 && !self.eof {
                let n = (skip as usize).min(scratch.len());
                let got = read_some(&mut self.reader, &mut scratch[..n])?;
                if got == 0 {
                    self.eof = true;
                }
                skip -= got as u64;
                self.start += got as u64;
            }
            if skip > 0 {
                return Ok(&[]);
            }
        } else {
            let drop = (at - self.start) as usize;
            self.buf.drain(..drop);
            self.start = at;
        }
        let want = len as usize;
        while self.buf.len() < want && !self.eof {
            let have = self.buf.len();
            self.buf.resize(want, 0);
            let got = read_some(&mut self.reader, &mut self.buf[have..])?;
            self.buf.truncate(have + got);
            if got == 0 {
                self.eof = true;
            }
        }
        Ok(&self.buf[..want.min(self.buf.len())])
    }

    /// Reads and discards the rest of the stream.
    fn drain(&mut self) -> Result<(), Qcow2Error> {
        self.buf.clear();
        let mut scratch = vec![0u8; 256 * 1024];
        while !self.eof {
            if read_some(&mut self.reader, &mut scratch)? == 0 {
                self.eof = true;
            }
        }
        Ok(())
    }
}

fn read_some<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, Qcow2Error> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Qcow2Error::Read(e)),
        }
    }
}

/// Decompressors for compressed clusters, kept across clusters.
struct Inflaters {
    deflate: flate2::Decompress,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

impl Inflaters {
    fn inflate(
        &mut self,
        kind: ClusterCompression,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<usize, String> {
        match kind {
            ClusterCompression::Deflate => {
                self.deflate.reset(false);
                self.deflate
                    .decompress(input, out, flate2::FlushDecompress::Finish)
                    .map_err(|e| e.to_string())?;
                Ok(self.deflate.total_out() as usize)
            }
            ClusterCompression::Zstd => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                let dec = match &mut self.zstd {
                    Some(d) => {
                        d.reinit().map_err(|e| e.to_string())?;
                        d
                    }
                    None => self
                        .zstd
                        .insert(zstd::stream::raw::Decoder::new().map_err(|e| e.to_string())?),
                };
                let mut inb = InBuffer::around(input);
                let mut outb = OutBuffer::around(out);
                loop {
                    let before = (inb.pos(), outb.pos());
                    let hint = dec.run(&mut inb, &mut outb).map_err(|e| e.to_string())?;
                    if hint == 0
                        || outb.pos() == outb.capacity()
                        || (inb.pos(), outb.pos()) == before
                    {
                        break;
                    }
                }
                Ok(outb.pos())
            }
        }
    }
}

/// Converts a qcow2 stream to raw guest writes.
pub struct Streamer<R> {
    window: Window<R>,
    layout: Layout,
    planned: bool,
    cluster: Vec<u8>,
    inflaters: Inflaters,
    written: u64,
}

impl<R> std::fmt::Debug for Streamer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamer")
            .field("header", &self.layout.header)
            .field("planned", &self.planned)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Streamer<R> {
    /// Reads and checks the header from the start of `reader`. With a `plan`
    /// (from random access), the stream's header must match the plan's.
    pub fn new(reader: R, file_len: Option<u64>, plan: Option<Plan>) -> Result<Self, Qcow2Error> {
        let mut window = Window {
            reader,
            buf: Vec::new(),
            start: 0,
            eof: false,
        };
        let head = window.get(0, MIN_HEADER as u64)?;
        let cs = cluster_size_of(head)?;
        let cluster = window.get(0, cs)?;
        let (layout, planned) = match plan {
            Some(plan) => {
                if digest(cluster) != plan.header_check {
                    return Err(invalid(
                        "the header changed between the metadata read and the download",
                    ));
                }
                (plan.layout, true)
            }
            None => {
                let header = Header::parse(cluster, file_len)?;
                let mut layout = Layout::new(header, file_len)?;
                layout.add_l1(None)?;
                (layout, false)
            }
        };
        Ok(Self {
            window,
            cluster: vec![0u8; layout.header.cluster_size() as usize],
            layout,
            planned,
            inflaters: Inflaters {
                deflate: flate2::Decompress::new(false),
                zstd: None,
            },
            written: 0,
        })
    }

    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.layout.header
    }

    /// Guest bytes of data written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Streams the whole image, writing guest data to `sink`, then reads the
    /// stream to its end.
    pub fn run(&mut self, sink: &mut dyn GuestSink) -> Result<(), Qcow2Error> {
        let size = self.layout.header.size;
        let cs = self.layout.header.cluster_size();
        let compression = self.layout.header.compression;
        while let Some((host, item)) = self.layout.items.pop_first() {
            for (g, len) in std::mem::take(&mut self.layout.zeros) {
                sink.zero_range(g, len)?;
            }
            match item {
                Item::L1 { check } => {
                    let len = self.layout.header.l1_size * 8;
                    let table = self.window.get(host, len)?.to_vec();
                    if (table.len() as u64) < len {
                        return Err(Qcow2Error::Truncated(
                            "the stream ended in the L1 table".into(),
                        ));
                    }
                    if let Some(c) = check {
                        if digest(&table) != c {
                            return Err(invalid(
                                "the L1 table changed between the metadata read and the download",
                            ));
                        }
                        continue;
                    }
                    for (index, off) in self.layout.parse_l1(&table)? {
                        if off < host {
                            return Err(Qcow2Error::NotStreamable(format!(
                                "the L2 table at {off:#x} comes before the L1 table at {host:#x}"
                            )));
                        }
                        self.layout.add_l2(index, off, None)?;
                    }
                }
                Item::L2 { index, check } => {
                    let table = self.window.get(host, cs)?;
                    if (table.len() as u64) < cs {
                        return Err(Qcow2Error::Truncated(format!(
                            "the stream ended in the L2 table at {host:#x}"
                        )));
                    }
                    if let Some(c) = check {
                        if digest(table) != c {
                            return Err(invalid(format!(
                                "the L2 table at {host:#x} changed between the metadata read and the download"
                            )));
                        }
                        continue;
                    }
                    let table = table.to_vec();
                    self.layout.parse_l2(index, &table)?;
                    if let Some((&first, _)) = self.layout.items.first_key_value() {
                        if first < host {
                            return Err(Qcow2Error::NotStreamable(format!(
                                "a data cluster at {first:#x} comes before the L2 table at {host:#x} that maps it"
                            )));
                        }
                    }
                }
                Item::Data(guests) => {
                    let data = self.window.get(host, cs)?;
                    for &g in guests.list() {
                        let n = cs.min(size - g);
                        if (data.len() as u64) < n {
                            return Err(Qcow2Error::Truncated(format!(
                                "the stream ended in the data cluster at {host:#x}"
                            )));
                        }
                        sink.write_at(g, &data[..n as usize])?;
                        self.written += n;
                    }
                }
                Item::Compressed { guests, len } => {
                    let input = self.window.get(host, len)?;
                    let got = self
                        .inflaters
                        .inflate(compression, input, &mut self.cluster)
                        .map_err(|e| {
                            invalid(format!(
                                "the compressed cluster at {host:#x} does not decompress: {e}"
                            ))
                        })?;
                    for &g in guests.list() {
                        let n = cs.min(size - g);
                        if (got as u64) < n {
                            return Err(invalid(format!(
                                "the compressed cluster at {host:#x} decompresses to {got} bytes, not {n}"
                            )));
                        }
                        sink.write_at(g, &self.cluster[..n as usize])?;
                        self.written += n;
                    }
                }
            }
        }
        for (g, len) in std::mem::take(&mut self.layout.zeros) {
            sink.zero_range(g, len)?;
        }
        self.window.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32, cluster_bits: u32, size: u64) -> Vec<u8> {
        let cs = 1usize << cluster_bits;
        let mut h = vec![0u8; cs * 3];
        h[..4].copy_from_slice(MAGIC);
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&(cs as u64 * 2).to_be_bytes());
        h[48..56].copy_from_slice(&(cs as u64).to_be_bytes());
        h[56..60].copy_from_slice(&1u32.to_be_bytes());
        if version == 3 {
            h[100..104].copy_from_slice(&104u32.to_be_bytes());
        }
        h
    }

    #[test]
    fn a_minimal_header_parses() {
        for v in [2, 3] {
            let h = header(v, 16, 1 << 20);
            let parsed = Header::parse(&h, Some(h.len() as u64)).unwrap();
            assert_eq!(parsed.cluster_size(), 65536);
            assert_eq!(parsed.size, 1 << 20);
        }
    }

    #[test]
    fn unsafe_headers_are_refused() {
        let base = header(3, 16, 1 << 20);
        type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "backing",
                Box::new(|h| h[8..16].copy_from_slice(&512u64.to_be_bytes())),
            ),
            (
                "cluster_bits",
                Box::new(|h| h[20..24].copy_from_slice(&30u32.to_be_bytes())),
            ),
            (
                "encrypted",
                Box::new(|h| h[32..36].copy_from_slice(&1u32.to_be_bytes())),
            ),
            (
                "L1 table",
                Box::new(|h| h[36..40].copy_from_slice(&0x0100_0000u32.to_be_bytes())),
            ),
            (
                "beyond",
                Box::new(|h| h[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes())),
            ),
            (
                "overlaps",
                Box::new(|h| h[48..56].copy_from_slice(&(2u64 << 16).to_be_bytes())),
            ),
            ("external data file", Box::new(|h| h[79] = 4)),
            ("unknown incompatible", Box::new(|h| h[72] = 0x80)),
            ("version", Box::new(|h| h[7] = 4)),
        ];
        for (what, mutate) in cases {
            let mut h = base.clone();
            mutate(&mut h);
            let e = Header::parse(&h, Some(h.len() as u64)).unwrap_err();
            assert!(matches!(e, Qcow2Error::Invalid(_)), "{what}: {e}");
        }
    }
}
