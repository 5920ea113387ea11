//! Fetched objects in memory, and the buffer a restore rebuilds a database image in: the
//! base object's own bytes, then every delta written over them in place.
//!
//! An object that is a file on this machine (object_store's `LocalFileSystem`) is mapped
//! instead of read: reading 200 MiB into fresh memory costs more than the whole load into
//! the pool (a page fault and a copy per page), while a private mapping shares the kernel's
//! cached pages, and only the pages a delta writes are copied.
//!
//! The mapping assumes what object_store does with its files: each is written once (to a
//! temporary name, then renamed) and never changed in place. One truncated by another
//! program while a restore maps it ends the process with `SIGBUS`, as SQLite's own
//! memory-mapped I/O would; one rewritten in place may reach the restore after its CRC was
//! checked (docs/replica.md, "Reading it back").

use super::format::{self, Header, Object, HEADER_LEN};
use super::store::Fetched;

/// Where the image's bytes live.
enum Storage {
    /// An allocation: `vec.len()` is always `start + len`.
    Owned(Vec<u8>),
    #[cfg(unix)]
    Mapped(mapping::Mapping),
}

/// A database image of `len` bytes at `start` in its storage.
pub(crate) struct Image {
    storage: Storage,
    start: usize,
    len: usize,
}

impl Image {
    /// The pages of a decoded base object, in the object's own buffer (no copy when nothing
    /// else holds it).
    pub(crate) fn of_object(object: Object) -> Image {
        let (vec, start) = object.into_buffer();
        Image {
            len: vec.len() - start,
            storage: Storage::Owned(vec),
            start,
        }
    }

    /// `len` bytes of pages at `start` of a mapped object.
    #[cfg(unix)]
    pub(crate) fn of_mapping(map: mapping::Mapping, start: usize, len: usize) -> Image {
        assert!(
            start + len <= map.capacity(),
            "the pages lie within the mapping"
        );
        Image {
            storage: Storage::Mapped(map),
            start,
            len,
        }
    }

    /// Makes room for an image of `len` bytes where that is cheap: a hint, since the size
    /// comes from a header not yet checked against its pages.
    pub(crate) fn reserve(&mut self, len: usize) {
        if let Storage::Owned(v) = &mut self.storage {
            let _ = v.try_reserve_exact((self.start + len).saturating_sub(v.len()));
        }
    }

    /// The image.
    pub(crate) fn bytes(&self) -> &[u8] {
        let all: &[u8] = match &self.storage {
            Storage::Owned(v) => v,
            #[cfg(unix)]
            Storage::Mapped(m) => m.as_slice(),
        };
        &all[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let all: &mut [u8] = match &mut self.storage {
            Storage::Owned(v) => v,
            #[cfg(unix)]
            Storage::Mapped(m) => m.as_mut_slice(),
        };
        &mut all[self.start..self.start + self.len]
    }

    /// Cuts the image to `len` bytes or extends it with zeros.
    fn resize(&mut self, len: usize) {
        match &mut self.storage {
            Storage::Owned(v) => v.resize(self.start + len, 0),
            #[cfg(unix)]
            Storage::Mapped(m) if self.start + len <= m.capacity() => {
                // Past the old end the mapping may hold older bytes: growth is zeros.
                if len > self.len {
                    m.as_mut_slice()[self.start + self.len..self.start + len].fill(0);
                }
            }
            #[cfg(unix)]
            Storage::Mapped(_) => {
                // Beyond what was reserved: an allocation of its own.
                let mut owned = Vec::with_capacity(len);
                owned.extend_from_slice(self.bytes());
                owned.resize(len, 0);
                self.storage = Storage::Owned(owned);
                self.start = 0;
            }
        }
        self.len = len;
    }

    /// Applies checked deltas in order: each resizes the image to its page count (cutting
    /// pages off, or adding zero pages) and writes its pages. (Writing them from two threads,
    /// one per half of the image, made this twice as slow on a mapped image, measured on 2
    /// cores: copy-on-write faults do not go faster side by side.)
    pub(crate) fn apply_all(&mut self, deltas: &[Object]) {
        for delta in deltas {
            let ps = delta.header.page_size as usize;
            self.resize(delta.header.page_count as usize * ps);
            let image = self.bytes_mut();
            for (i, &n) in delta.numbers.iter().enumerate() {
                let at = (n as usize - 1) * ps;
                image[at..at + ps].copy_from_slice(&delta.pages[i * ps..(i + 1) * ps]);
            }
        }
    }
}

/// The bytes of a fetched object; a file is mapped (privately, and never written), or read
/// when it cannot be.
pub(crate) fn bytes_of(fetched: Fetched) -> Result<bytes::Bytes, String> {
    match fetched {
        Fetched::Bytes(bytes) => Ok(bytes),
        Fetched::File(file, len) => {
            let len = usize::try_from(len).map_err(|_| "larger than this machine's memory")?;
            #[cfg(unix)]
            if let Ok(map) = mapping::Mapping::new(&file, len, len) {
                return Ok(map.into_bytes(len));
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(&file, len as u64), &mut bytes)
                .map_err(|e| format!("unreadable: {e}"))?;
            Ok(bytes.into())
        }
    }
}

/// A base object's pages as an image, checked (length, checksums, page numbers), with room
/// for `final_len` bytes where that is cheap. A file is mapped rather than read; one that
/// cannot be is read.
pub(crate) fn base_image(fetched: Fetched, final_len: usize) -> Result<(Header, Image), String> {
    #[cfg(unix)]
    let fetched = match fetched {
        Fetched::File(file, len) => {
            let len = usize::try_from(len).map_err(|_| "larger than this machine's memory")?;
            match mapped_image(&file, len, final_len)? {
                Some(found) => return Ok(found),
                None => Fetched::File(file, len as u64),
            }
        }
        bytes => bytes,
    };
    let object = format::decode(bytes_of(fetched)?)?;
    let header = object.header.clone();
    let mut image = Image::of_object(object);
    image.reserve(final_len);
    Ok((header, image))
}

/// The image of a base object mapped from its file, if it could be mapped and is stored
/// uncompressed.
#[cfg(unix)]
fn mapped_image(
    file: &std::fs::File,
    len: usize,
    final_len: usize,
) -> Result<Option<(Header, Image)>, String> {
    use mapping::Mapping;
    // Room to grow in place; the capacity comes from a header not yet checked, so a refused
    // reservation falls back to the file's own length.
    let Some(map) = Mapping::new(file, len, len.saturating_add(final_len))
        .or_else(|_| Mapping::new(file, len, len))
        .ok()
    else {
        return Ok(None);
    };
    let object = &map.as_slice()[..len];
    let header = format::verify(object)?;
    if header.codec != format::Codec::Plain {
        return Ok(None);
    }
    let numbers = format::page_numbers(&header, &object[HEADER_LEN..])?;
    let pages_at = HEADER_LEN + numbers.len() * 4;
    Ok(Some((
        header,
        Image::of_mapping(map, pages_at, len - pages_at),
    )))
}

#[cfg(unix)]
pub(crate) mod mapping {
    //! A file mapped copy-on-write at the start of a larger reserved region.

    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::ptr;

    /// `capacity` readable and writable bytes: the file's `len` bytes, then zeros. Writes
    /// stay in this process (`MAP_PRIVATE`); the file is never changed.
    pub(crate) struct Mapping {
        ptr: *mut u8,
        capacity: usize,
    }

    // SAFETY: the mapping is owned by this value alone (no other pointer to it exists), so
    // moving it to another thread is moving a Vec's buffer.
    unsafe impl Send for Mapping {}
    // SAFETY: shared access only reads through `as_slice`; writes need `&mut self`.
    unsafe impl Sync for Mapping {}

    fn page_size() -> usize {
        // SAFETY: sysconf only reads a system constant.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).unwrap_or(4096).max(1)
    }

    impl Mapping {
        /// Maps the first `len` bytes of `file` in a region of at least `capacity` bytes.
        pub(crate) fn new(file: &File, len: usize, capacity: usize) -> io::Result<Mapping> {
            let page = page_size();
            let file_part = len.next_multiple_of(page);
            let capacity = capacity.max(len).next_multiple_of(page).max(page);
            // SAFETY: an anonymous private mapping at an address of the kernel's choosing
            // touches no existing memory; the result is checked before use.
            let region = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    capacity,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if region == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let mapping = Mapping {
                ptr: region.cast(),
                capacity,
            };
            if file_part > 0 {
                // SAFETY: MAP_FIXED replaces pages of the region we just reserved and own
                // (file_part <= capacity), nothing else; the file stays open for the call,
                // and a mapping outlives its descriptor.
                let over = unsafe {
                    libc::mmap(
                        region,
                        file_part,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_FIXED,
                        file.as_raw_fd(),
                        0,
                    )
                };
                if over == libc::MAP_FAILED {
                    return Err(io::Error::last_os_error()); // `mapping` unmaps the region
                }
            }
            Ok(mapping)
        }

        pub(crate) fn capacity(&self) -> usize {
            self.capacity
        }

        pub(crate) fn as_slice(&self) -> &[u8] {
            // SAFETY: `capacity` bytes at `ptr` are mapped readable for as long as `self`
            // lives, and no `&mut` to them exists while `&self` is borrowed.
            unsafe { std::slice::from_raw_parts(self.ptr, self.capacity) }
        }

        /// Its first `len` bytes as `Bytes`, without a copy.
        pub(crate) fn into_bytes(self, len: usize) -> bytes::Bytes {
            struct Prefix(Mapping, usize);
            impl AsRef<[u8]> for Prefix {
                fn as_ref(&self) -> &[u8] {
                    &self.0.as_slice()[..self.1]
                }
            }
            assert!(len <= self.capacity);
            bytes::Bytes::from_owner(Prefix(self, len))
        }

        pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
            // SAFETY: as `as_slice`, writable, and `&mut self` makes this the only borrow.
            unsafe { std::slice::from_raw_parts_mut(self.ptr, self.capacity) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: the region is ours, mapped in `new`, and no slice of it outlives
            // `self`. munmap of a private mapping cannot lose data anyone needs.
            unsafe { libc::munmap(self.ptr.cast(), self.capacity) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::format::test_delta as delta_to;

    fn delta() -> Object {
        delta_to(9, &[1, 9])
    }

    fn owned(bytes: Vec<u8>) -> Image {
        Image {
            len: bytes.len(),
            storage: Storage::Owned(bytes),
            start: 0,
        }
    }

    #[test]
    fn a_delta_resizes_the_image_and_writes_its_pages() {
        let mut image = owned(vec![1u8; 512 * 2]);
        image.apply_all(&[delta()]);
        let b = image.bytes();
        assert_eq!(b.len(), 512 * 9);
        assert_eq!(b[..512], [7u8; 512]);
        assert_eq!(b[512..1024], [1u8; 512]);
        assert!(b[1024..512 * 8].iter().all(|&x| x == 0));
        assert_eq!(b[512 * 8..], [7u8; 512]);
    }

    /// Deltas that shrink the image, then grow it: the pages cut off come back as zeros, not
    /// as their old content; and a chain applied at once gives what one by one gives.
    #[test]
    fn a_shrink_in_the_chain_zeroes_what_it_cut() {
        let mut image = owned(vec![1u8; 512 * 4]);
        image.apply_all(&[delta_to(1, &[1]), delta_to(9, &[9])]);
        let b = image.bytes();
        assert_eq!(b.len(), 512 * 9);
        assert_eq!(b[..512], [7u8; 512]);
        assert!(b[512..512 * 8].iter().all(|&x| x == 0), "cut, then zeros");
        assert_eq!(b[512 * 8..], [7u8; 512]);

        let chain = [delta_to(6, &[2, 6]), delta_to(9, &[3, 9])];
        let mut together = owned(vec![1u8; 512 * 4]);
        together.apply_all(&chain);
        let mut one_by_one = owned(vec![1u8; 512 * 4]);
        for d in &chain {
            one_by_one.apply_all(std::slice::from_ref(d));
        }
        assert_eq!(together.bytes(), one_by_one.bytes());
        assert_eq!(together.bytes()[512..1024], [7u8; 512]);
        assert_eq!(
            together.bytes()[512 * 3..512 * 4],
            [1u8; 512],
            "page 4 kept"
        );
        assert!(together.bytes()[512 * 6..512 * 8].iter().all(|&x| x == 0));
    }

    /// A mapped image: the file's bytes, writes that never reach the file, zeros where it
    /// grows (also over bytes it held before a shrink), and growth past the reservation.
    #[cfg(unix)]
    #[test]
    fn a_mapped_image_is_copy_on_write_and_grows_with_zeros() {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&content).unwrap();
        let map = mapping::Mapping::new(&file, content.len(), 512 * 10).unwrap();
        let mut image = Image::of_mapping(map, 8, 512 * 2);
        assert_eq!(image.bytes(), &content[8..8 + 1024]);
        image.resize(512);
        image.apply_all(&[delta()]);
        let b = image.bytes();
        assert_eq!(b[..512], [7u8; 512]);
        assert!(b[512..512 * 8].iter().all(|&x| x == 0), "growth is zeros");
        assert_eq!(b[512 * 8..], [7u8; 512]);
        let mut on_disk = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))
                .map(|_| &file)
                .unwrap(),
            &mut on_disk,
        )
        .unwrap();
        assert_eq!(on_disk, content, "the file is never written");
        image.resize(512 * 30);
        assert_eq!(image.bytes().len(), 512 * 30);
        assert_eq!(image.bytes()[..512], [7u8; 512]);
        assert!(image.bytes()[512 * 9..].iter().all(|&x| x == 0));
    }
}
