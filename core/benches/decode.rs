//! Decoding throughput of the built-in framings over a large pre-filled buffer.
//!
//! `cargo bench -p easynet-core --bench decode`

use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use easynet_core::protocol::{Framing, LengthPrefixed, Lines, PrefixWidth};

/// About 4 MiB of frames of `size` bytes.
fn corpus(size: usize, frame: impl Fn(&mut BytesMut, &[u8])) -> BytesMut {
    let payload = vec![b'x'; size];
    let mut buf = BytesMut::new();
    while buf.len() < 4 << 20 {
        frame(&mut buf, &payload);
    }
    buf
}

fn run<F: Framing>(c: &mut Criterion, name: &str, framing: F, data: BytesMut) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.bench_function(name, |b| {
        // The copy of the corpus is set-up, not measured.
        b.iter_batched(
            || data.clone(),
            |mut buf| {
                let mut state = F::State::default();
                let mut n = 0usize;
                while let Ok(Some(frame)) = framing.decode(&mut state, &mut buf) {
                    n += frame.len();
                }
                black_box(n)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn lines(c: &mut Criterion) {
    for size in [64, 1024] {
        let data = corpus(size, |b, p| {
            b.extend_from_slice(p);
            b.put_u8(b'\n');
        });
        run(c, &format!("lines_{size}B"), Lines::new(), data);
    }
}

fn length_prefixed(c: &mut Criterion) {
    for size in [1024, 64 * 1024] {
        let data = corpus(size, |b, p| {
            b.put_u32(p.len() as u32);
            b.extend_from_slice(p);
        });
        let framing = LengthPrefixed::new(PrefixWidth::U32, 1 << 20).unwrap();
        run(c, &format!("length_u32_{size}B"), framing, data);
    }
}

/// Framing plus deserialization, as a server sees it: lines to `String`, JSON lines to values.
fn messages(c: &mut Criterion) {
    use easynet_core::protocol::{Stream, StreamProtocol, StreamServerProtocol};
    let mut group = c.benchmark_group("decode_messages");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    let lines = corpus(1024, |b, p| {
        b.extend_from_slice(p);
        b.put_u8(b'\n');
    });
    group.throughput(Throughput::Bytes(lines.len() as u64));
    let proto = Stream::lines();
    group.bench_function("lines_1024B_to_String", |b| {
        b.iter_batched(
            || lines.clone(),
            |mut buf| {
                let mut state = proto.new_decoder();
                let mut n = 0usize;
                while let Ok(Some(s)) = proto.decode_request(&mut state, &mut buf) {
                    n += s.len();
                }
                black_box(n)
            },
            BatchSize::LargeInput,
        )
    });
    let doc =
        br#"{"id":12345,"method":"echo","params":{"text":"hello world","tags":["a","b","c"]}}"#;
    let json = corpus(doc.len(), |b, _| {
        b.extend_from_slice(doc);
        b.put_u8(b'\n');
    });
    group.throughput(Throughput::Bytes(json.len() as u64));
    let proto = Stream::<_, _, serde_json::Value, serde_json::Value>::json_lines();
    group.bench_function("json_lines_to_Value", |b| {
        b.iter_batched(
            || json.clone(),
            |mut buf| {
                let mut state = proto.new_decoder();
                let mut n = 0usize;
                while let Ok(Some(v)) = proto.decode_request(&mut state, &mut buf) {
                    n += v.as_object().map_or(0, |o| o.len());
                }
                black_box(n)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, lines, length_prefixed, messages);
criterion_main!(benches);
