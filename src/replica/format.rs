//! The objects a replica writes, byte for byte (docs/replica.md is the reference).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first 8 bytes of every object.
pub(crate) const MAGIC: &[u8; 8] = b"DSBREPL1";
/// The header's length; the body follows.
pub(crate) const HEADER_LEN: usize = 72;

/// A whole database image, or the pages that changed since the sync before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Snapshot = 1,
    Delta = 2,
}

/// How the body is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Plain = 0,
    Zstd = 1,
}

/// The header of an object, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: Kind,
    pub(crate) codec: Codec,
    pub(crate) page_size: u32,
    /// The database's size in pages after this sync.
    pub(crate) page_count: u32,
    /// How many pages the body holds.
    pub(crate) entries: u32,
    pub(crate) sync: u64,
    /// The sync this object applies to (a delta: `sync - 1`; a snapshot: `sync`).
    pub(crate) base: u64,
    /// The id of the replica that wrote it: a delta applies only to its own generation.
    pub(crate) generation: u64,
    /// Nanoseconds since the Unix epoch when the sync read the database.
    pub(crate) time_ns: u64,
    /// The stored body's length and CRC-32.
    pub(crate) body_len: u64,
    pub(crate) body_crc: u32,
}

impl Header {
    pub(crate) fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.time_ns)
    }

    fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8] = self.kind as u8;
        h[9] = self.codec as u8;
        h[12..16].copy_from_slice(&self.page_size.to_le_bytes());
        h[16..20].copy_from_slice(&self.page_count.to_le_bytes());
        h[20..24].copy_from_slice(&self.entries.to_le_bytes());
        h[24..32].copy_from_slice(&self.sync.to_le_bytes());
        h[32..40].copy_from_slice(&self.base.to_le_bytes());
        h[40..48].copy_from_slice(&self.generation.to_le_bytes());
        h[48..56].copy_from_slice(&self.time_ns.to_le_bytes());
        h[56..64].copy_from_slice(&self.body_len.to_le_bytes());
        h[64..68].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..68]);
        h[68..72].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses and checks the first [`HEADER_LEN`] bytes of an object.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header, String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!(
                "truncated: {} bytes, shorter than a header",
                bytes.len()
            ));
        }
        let h = &bytes[..HEADER_LEN];
        if &h[0..8] != MAGIC {
            return Err("not a replica object (bad magic)".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap());
        if crc32fast::hash(&h[..68]) != u32_at(68) {
            return Err("header checksum mismatch (corrupt)".into());
        }
        let kind = match h[8] {
            1 => Kind::Snapshot,
            2 => Kind::Delta,
            k => return Err(format!("unknown kind {k}")),
        };
        let codec = match h[9] {
            0 => Codec::Plain,
            1 => Codec::Zstd,
            c => return Err(format!("unknown compression {c}")),
        };
        let header = Header {
            kind,
            codec,
            page_size: u32_at(12),
            page_count: u32_at(16),
            entries: u32_at(20),
            sync: u64_at(24),
            base: u64_at(32),
            generation: u64_at(40),
            time_ns: u64_at(48),
            body_len: u64_at(56),
            body_crc: u32_at(64),
        };
        let ps = header.page_size;
        if h[10..12] != [0, 0] || !(512..=65536).contains(&ps) || !ps.is_power_of_two() {
            return Err(format!("bad page size {ps} or reserved bytes"));
        }
        let base_ok = match kind {
            Kind::Snapshot => header.base == header.sync && header.entries == header.page_count,
            Kind::Delta => header.base.checked_add(1) == Some(header.sync),
        };
        if !base_ok || header.entries > header.page_count {
            return Err("inconsistent sync, base, entries or page count".into());
        }
        Ok(header)
    }
}

/// A decoded object: its header, and its pages (`numbers[i]` is `pages[i * page_size..]`).
#[derive(Debug)]
pub(crate) struct Object {
    pub(crate) header: Header,
    pub(crate) numbers: Vec<u32>,
    /// `source[pages_at..]`: no copy.
    pub(crate) pages: bytes::Bytes,
    /// The object as read, or its decompressed body.
    source: bytes::Bytes,
    pages_at: usize,
}

impl Object {
    /// The buffer the pages are in, and where they start: an image's pages become the
    /// restore's buffer without a copy when nothing else holds the object.
    pub(crate) fn into_buffer(self) -> (Vec<u8>, usize) {
        drop(self.pages);
        (Vec::from(self.source), self.pages_at)
    }
}

/// What an object holds besides its pages.
pub(crate) struct Contents<'a> {
    pub(crate) kind: Kind,
    pub(crate) page_size: u32,
    pub(crate) page_count: u32,
    pub(crate) sync: u64,
    pub(crate) generation: u64,
    pub(crate) time_ns: u64,
    pub(crate) numbers: &'a [u32],
}

/// Where the pages of an object of `entries` pages start, uncompressed.
pub(crate) fn pages_at(entries: usize) -> usize {
    HEADER_LEN + entries * 4
}

/// Encodes `c` with `pages` (`c.numbers.len()` pages, one after another), its body
/// compressed with zstd at `zstd_level` if given.
pub(crate) fn encode(c: &Contents<'_>, pages: &[u8], zstd_level: Option<i32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages_at(c.numbers.len()) + pages.len());
    out.resize(pages_at(c.numbers.len()), 0);
    out.extend_from_slice(pages);
    encode_in_place(c, out, zstd_level)
}

/// Encodes `c` in `out`, which holds the pages from [`pages_at`] on (where a sync reads
/// them): the page numbers and the header are written around them, so uncompressed pages
/// are never copied.
pub(crate) fn encode_in_place(
    c: &Contents<'_>,
    mut out: Vec<u8>,
    zstd_level: Option<i32>,
) -> Vec<u8> {
    let at = pages_at(c.numbers.len());
    assert!(out.len() >= at, "room for the header and the page numbers");
    for (i, n) in c.numbers.iter().enumerate() {
        out[HEADER_LEN + i * 4..HEADER_LEN + i * 4 + 4].copy_from_slice(&n.to_le_bytes());
    }
    let codec = match zstd_level {
        None => Codec::Plain,
        Some(level) => {
            let packed = compress(&out[HEADER_LEN..], level);
            out.truncate(HEADER_LEN);
            out.extend_from_slice(&packed);
            Codec::Zstd
        }
    };
    let body = &out[HEADER_LEN..];
    let header = Header {
        kind: c.kind,
        codec,
        page_size: c.page_size,
        page_count: c.page_count,
        entries: c.numbers.len() as u32,
        sync: c.sync,
        base: match c.kind {
            Kind::Snapshot => c.sync,
            Kind::Delta => c.sync - 1,
        },
        generation: c.generation,
        time_ns: c.time_ns,
        body_len: body.len() as u64,
        body_crc: crc32fast::hash(body),
    };
    out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    out
}

/// Decodes and checks a whole object: checksums, lengths, page numbers.
pub(crate) fn decode(bytes: bytes::Bytes) -> Result<Object, String> {
    let header = verify(&bytes)?;
    let (source, body_at) = match header.codec {
        Codec::Plain => (bytes.clone(), HEADER_LEN),
        Codec::Zstd => {
            let want = header.entries as usize * (4 + header.page_size as usize);
            let body = decompress(&bytes[HEADER_LEN..], want)?;
            (bytes::Bytes::from(body), 0)
        }
    };
    drop(bytes);
    let numbers = page_numbers(&header, &source[body_at..])?;
    let pages_at = body_at + numbers.len() * 4;
    Ok(Object {
        header,
        numbers,
        pages: source.slice(pages_at..),
        source,
        pages_at,
    })
}

/// Checks an object's header, its length and its body's checksum.
pub(crate) fn verify(bytes: &[u8]) -> Result<Header, String> {
    let header = Header::parse(bytes)?;
    let stored = &bytes[HEADER_LEN..];
    if stored.len() as u64 != header.body_len {
        return Err(format!(
            "truncated or padded: body of {} bytes, header says {}",
            stored.len(),
            header.body_len
        ));
    }
    if crc32fast::hash(stored) != header.body_crc {
        return Err("body checksum mismatch (corrupt)".into());
    }
    Ok(header)
}

/// The page numbers of a verified object's (decompressed) body, checked against its header;
/// the pages follow them.
pub(crate) fn page_numbers(header: &Header, body: &[u8]) -> Result<Vec<u32>, String> {
    let entries = header.entries as usize;
    let want = entries * (4 + header.page_size as usize);
    if body.len() != want {
        return Err(format!(
            "body holds {} bytes, {entries} pages need {want}",
            body.len()
        ));
    }
    let numbers: Vec<u32> = body[..entries * 4]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let ascending = numbers.windows(2).all(|w| w[0] < w[1]);
    let in_range = numbers.iter().all(|&n| n >= 1 && n <= header.page_count);
    let whole = header.kind != Kind::Snapshot || numbers.iter().copied().eq(1..=header.page_count);
    if !ascending || !in_range || !whole {
        return Err("page numbers out of order or out of range".into());
    }
    Ok(numbers)
}

#[cfg(feature = "replica-zstd")]
fn compress(body: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(body, level).expect("zstd compression of a memory buffer")
}

#[cfg(not(feature = "replica-zstd"))]
fn compress(_: &[u8], _: i32) -> Vec<u8> {
    unreachable!("Compression::Zstd exists only with the replica-zstd feature")
}

#[cfg(feature = "replica-zstd")]
fn decompress(stored: &[u8], want: usize) -> Result<Vec<u8>, String> {
    zstd::bulk::decompress(stored, want).map_err(|e| format!("zstd body unreadable: {e}"))
}

#[cfg(not(feature = "replica-zstd"))]
fn decompress(_: &[u8], _: usize) -> Result<Vec<u8>, String> {
    Err("compressed with zstd: build with the replica-zstd feature to read it".into())
}

/// A decoded delta of 512-byte pages to `page_count` pages, writing `numbers` with 7s.
#[cfg(test)]
pub(crate) fn test_delta(page_count: u32, numbers: &[u32]) -> Object {
    let pages = vec![7u8; 512 * numbers.len()];
    let contents = Contents {
        kind: Kind::Delta,
        page_size: 512,
        page_count,
        sync: 5,
        generation: 42,
        time_ns: 1,
        numbers,
    };
    decode(encode(&contents, &pages, None).into()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let pages = vec![7u8; 1024];
        encode(
            &Contents {
                kind: Kind::Delta,
                page_size: 512,
                page_count: 9,
                sync: 5,
                generation: 42,
                time_ns: 1,
                numbers: &[1, 9],
            },
            &pages,
            None,
        )
    }

    #[test]
    fn round_trips_and_every_flipped_byte_is_caught() {
        let bytes = sample();
        let o = decode(bytes.clone().into()).unwrap();
        assert_eq!(o.numbers, vec![1, 9]);
        assert_eq!(
            (o.header.sync, o.header.base, o.header.generation),
            (5, 4, 42)
        );
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode(bad.into()).is_err(), "flip at {at} not caught");
        }
        assert!(decode(bytes[..bytes.len() - 1].to_vec().into()).is_err());
    }
}
