//! Memory figures of this process for the reports (Linux `/proc`; `None` elsewhere).

/// The process's peak resident set size so far (VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_grows_with_a_touched_allocation() {
        let before = super::peak_rss_bytes().unwrap();
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        let after = super::peak_rss_bytes().unwrap();
        assert!(after >= before + (60 << 20), "{before} → {after}");
    }
}
