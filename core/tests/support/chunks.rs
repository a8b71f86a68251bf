//! Cutting a byte stream into arbitrary reads.

/// Splits `stream` at the given cut points (taken modulo its length).
pub fn chunks(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    if stream.is_empty() {
        return vec![];
    }
    let mut points: Vec<usize> = cuts.iter().map(|c| c % stream.len()).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| stream[w[0]..w[1]].to_vec())
        .collect()
}
