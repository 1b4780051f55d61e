//! Read-only memory maps of model and external-data files (`onnx-prune inspect`). The decoded
//! protobuf's `raw_data` fields are slices of the map, so reading a model costs no copy of its
//! weights; a tensor decoded later hands its pages back to the kernel (`release`), which keeps
//! the resident set near the largest tensor instead of the whole file.

use bytes::Bytes;
use memmap2::{Mmap, UncheckedAdvice};
use std::path::Path;
use std::sync::Arc;

/// A mapped file, shared by every `Bytes` sliced from it.
#[derive(Clone)]
pub struct Mapped(Arc<Mmap>);

struct Owner(Arc<Mmap>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} bytes)", self.0.len())
    }
}

impl Mapped {
    /// Maps `path` read-only. An empty file gives `None` (nothing to map).
    pub fn open(path: &Path) -> std::io::Result<Option<Mapped>> {
        let f = std::fs::File::open(path)?;
        if f.metadata()?.len() == 0 {
            return Ok(None);
        }
        // SAFETY: the map is read-only; a file truncated by another process while we read it
        // would fault (SIGBUS) — the price of not copying, accepted for `inspect`, which reads
        // and never writes. Passes read files into memory instead.
        let m = unsafe { Mmap::map(&f)? };
        // Parsing skips over tensor bytes: read-around on each fault would pull in megabytes
        // of weights per tensor header. Best effort: a failure only costs memory.
        let _ = m.advise(memmap2::Advice::Random);
        Ok(Some(Mapped(Arc::new(m))))
    }

    /// Drops every resident page of the map (after parsing, nothing needs them resident).
    pub fn release_all(&self) {
        self.release(&self.0[..]);
    }

    /// A tracker for a forward-only reader of this map: `advance_to` releases what lies
    /// behind the reader's position in steps of `RELEASE_STEP`.
    pub fn behind(&self) -> Behind {
        Behind {
            map: self.clone(),
            released: 0,
        }
    }

    /// The whole file as `Bytes` backed by the map.
    pub fn bytes(&self) -> Bytes {
        Bytes::from_owner(Owner(self.0.clone()))
    }

    /// Whether `b` lies inside this map.
    pub fn contains(&self, b: &[u8]) -> bool {
        let base = self.0.as_ptr() as usize;
        let p = b.as_ptr() as usize;
        !b.is_empty() && p >= base && p + b.len() <= base + self.0.len()
    }

    /// Drops the resident pages behind `b` (when `b` lies in this map): the next read faults
    /// them in again from the file. Returns whether it did.
    pub fn release(&self, b: &[u8]) -> bool {
        if !self.contains(b) {
            return false;
        }
        let offset = b.as_ptr() as usize - self.0.as_ptr() as usize;
        // SAFETY: a read-only file-backed mapping: MADV_DONTNEED only removes our page-table
        // entries, and any later access reads the same bytes back from the file, so no live
        // reference into the map sees different contents.
        unsafe {
            self.0
                .unchecked_advise_range(UncheckedAdvice::DontNeed, offset, b.len())
                .is_ok()
        }
    }
}

/// Bytes a forward reader passes before the pages behind it are released. The kernel maps a
/// whole page-cache folio (up to 2 MiB on ext4) on each fault, so a parser that only touches
/// tensor headers would otherwise end up with most of the file resident.
const RELEASE_STEP: usize = 4 << 20;

/// See `Mapped::behind`.
pub struct Behind {
    map: Mapped,
    released: usize,
}

impl Behind {
    /// The reader is at `rest` (its unread slice); pages before it are no longer needed.
    pub fn advance_to(&mut self, rest: &[u8]) {
        let base = self.map.0.as_ptr() as usize;
        let p = rest.as_ptr() as usize;
        if p < base || p > base + self.map.0.len() {
            return;
        }
        let at = p - base;
        if at >= self.released + RELEASE_STEP {
            self.map.release(&self.map.0[self.released..at]);
            self.released = at;
        }
    }
}

/// A `Buf` over the map's bytes that releases the pages behind its cursor as prost decodes
/// (`bytes` fields stay zero-copy: `copy_to_bytes` slices the underlying `Bytes`).
pub struct ReleasingBuf {
    inner: Bytes,
    behind: Behind,
}

impl ReleasingBuf {
    pub fn new(map: &Mapped) -> ReleasingBuf {
        ReleasingBuf {
            inner: map.bytes(),
            behind: map.behind(),
        }
    }
}

impl bytes::Buf for ReleasingBuf {
    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.inner.chunk()
    }

    fn advance(&mut self, n: usize) {
        self.inner.advance(n);
        self.behind.advance_to(&self.inner);
    }

    fn copy_to_bytes(&mut self, n: usize) -> Bytes {
        let b = self.inner.copy_to_bytes(n);
        self.behind.advance_to(&self.inner);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_pages_read_back_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("onnx-prune-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("blob");
        let data: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let m = Mapped::open(&p).unwrap().unwrap();
        let b = m.bytes();
        let s = b.slice(4097..(2 << 20));
        assert_eq!(&s[..], &data[4097..(2 << 20)]);
        assert!(m.release(&s));
        assert_eq!(&s[..], &data[4097..(2 << 20)]);
        assert!(!m.release(&data[..16]), "a heap slice is not in the map");
        std::fs::write(dir.join("empty"), b"").unwrap();
        assert!(Mapped::open(&dir.join("empty")).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
