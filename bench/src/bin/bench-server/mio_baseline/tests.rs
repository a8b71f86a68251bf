//! The `*String` baselines' line and answer bookkeeping, without sockets.

use super::*;

fn data(bytes: &[u8]) -> Data {
    let mut d = Data::default();
    d.buf.extend_from_slice(bytes);
    d.filled = bytes.len();
    d
}

#[test]
fn take_lines_hands_over_valid_lines_and_keeps_the_partial_one() {
    let mut d = data(b"ab\n\xff\ncd\nef");
    let mut answers = Answers::default();
    assert!(d.take_lines(&mut answers).is_ok());
    assert_eq!(answers.queue, ["ab", "cd"]);
    assert_eq!(&d.buf[..d.filled], b"ef");
    d.buf.truncate(d.filled);
    d.buf.extend_from_slice(b"g\n");
    d.filled = d.buf.len();
    assert!(d.take_lines(&mut answers).is_ok());
    assert_eq!(answers.queue, ["ab", "cd", "efg"]);
    assert_eq!(d.filled, 0);
}

/// What `slices` offers after `written` bytes, joined.
fn pending(a: &Answers) -> Vec<u8> {
    let mut iov = [IoSlice::new(&[]); 8];
    let n = a.slices(&mut iov);
    iov[..n].iter().flat_map(|s| s.to_vec()).collect()
}

#[test]
fn partial_writes_resume_where_they_stopped() {
    let mut a = Answers::default();
    a.queue
        .extend(["abc".to_string(), String::new(), "de".to_string()]);
    assert_eq!(pending(&a), b"abc\n\nde\n");
    a.written(2);
    assert_eq!(pending(&a), b"c\n\nde\n");
    a.written(2); // "c\n": the first answer is done
    assert_eq!((a.queue.len(), a.head), (2, 0));
    a.written(2); // the empty answer and "d"
    assert_eq!(pending(&a), b"e\n");
    a.written(2);
    assert!(a.queue.is_empty() && a.head == 0);
}

#[test]
fn one_writev_takes_at_most_half_the_slices_in_answers() {
    let mut a = Answers::default();
    a.queue.extend((0..10).map(|i| i.to_string()));
    assert_eq!(pending(&a), b"0\n1\n2\n3\n");
}
