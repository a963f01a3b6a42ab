//! Work spread over the cores: how many a scan may use, and running parts of it at once.

/// Threads one scan may use: the cores this process may run on, asked once (the answer
/// reads cgroup files, which cost every query a few system calls when asked each time).
pub fn scan_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `scan` over every part at once, each part on a thread of its own. Results come in
/// part order; a part whose thread panicked gives `None`. (Scanning the first part on the
/// calling thread instead saved a spawn but made q5 of the peer benchmark slower: the
/// scheduler often left the new thread waiting on the caller's core.)
pub fn scan_parts<P: Send, T: Send>(
    parts: impl IntoIterator<Item = P>,
    scan: impl Fn(P) -> T + Sync,
) -> Vec<Option<T>> {
    std::thread::scope(|scope| {
        let scan = &scan;
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || scan(part)))
            .collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_scanned_in_order_and_a_panicking_part_is_none() {
        let parts: Vec<Vec<u32>> = (0..4u32).map(|i| vec![i * 10, i * 10 + 1]).collect();
        let sums = scan_parts(&parts, |p| p.iter().sum::<u32>());
        assert_eq!(sums, vec![Some(1), Some(21), Some(41), Some(61)]);
        for failing in [0, 20] {
            let one_fails = scan_parts(&parts, |p| {
                assert!(!p.contains(&failing), "a worker panics");
                p.len()
            });
            let expected: Vec<Option<usize>> =
                (0..4).map(|i| (i * 10 != failing).then_some(2)).collect();
            assert_eq!(one_fails, expected);
        }
        assert!(scan_parts(&[] as &[Vec<u32>], |p| p.len()).is_empty());
        assert!(scan_cores() >= 1);
    }
}
