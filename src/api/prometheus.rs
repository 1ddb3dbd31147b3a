//! A [`MetricsSnapshot`] in the Prometheus text exposition format 0.0.4 (`GET /metrics`).
//!
//! Every family has its `# HELP` and `# TYPE` lines and all its samples together; counters
//! end in `_total`; units are seconds and bytes. Per-mount series carry `mountpoint` and
//! `fs_type` (the table's own directories are `mountpoint="/"`, `fs_type="pseudo"`), per
//! operation also `op`; nothing is labelled by inode, so the series count stays bounded by
//! mounts x operations. Latency histograms are cumulative, end with `le="+Inf"`, and their
//! `_count` is the `+Inf` bucket.

use std::fmt::Write;

use crate::mounts::{MetricsSnapshot, MountMetrics, LATENCY_BOUNDS_SECONDS};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prefix of every metric name.
const PREFIX: &str = "puzzlefs_";

/// The snapshot as exposition text.
pub fn render(s: &MetricsSnapshot) -> String {
    let mut out = Text(String::with_capacity(4096));
    out.scalar(
        "uptime_seconds",
        "gauge",
        "Seconds since the mount table was created.",
        s.uptime_seconds,
    );
    out.scalar(
        "live_mounts",
        "gauge",
        "File systems mounted now.",
        s.mounts.len() as u64,
    );
    out.scalar(
        "mounts_total",
        "counter",
        "Mounts that succeeded.",
        s.mounts_total,
    );
    out.scalar(
        "umounts_total",
        "counter",
        "Unmounts that succeeded.",
        s.umounts_total,
    );
    out.scalar(
        "mount_failures_total",
        "counter",
        "Mount requests refused or failed.",
        s.mount_failures_total,
    );

    let all: Vec<&MountMetrics> = std::iter::once(&s.pseudo).chain(&s.mounts).collect();
    per_op(&mut out, &all);
    per_mount(&mut out, &all);
    chunk_store(&mut out, s);
    out.0
}

/// A counter family read from each `T`: name, help, getter.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Requests, errors and latency per mount and operation.
fn per_op(out: &mut Text, mounts: &[&MountMetrics]) {
    let counters: [Family<crate::mounts::OpMetrics>; 2] = [
        ("fuse_requests_total", "FUSE requests answered.", |o| {
            o.requests
        }),
        (
            "fuse_errors_total",
            "FUSE requests answered with an error.",
            |o| o.errors,
        ),
    ];
    for (name, help, get) in counters {
        out.header(name, "counter", help);
        for m in mounts {
            for o in &m.ops {
                out.sample(name, &labels(m, Some(o.op.name()), None), get(o));
            }
        }
    }

    let name = "fuse_request_duration_seconds";
    out.header(
        name,
        "histogram",
        "Time the file system took to answer a FUSE request.",
    );
    for m in mounts {
        for o in &m.ops {
            let op = Some(o.op.name());
            let counts = &o.latency.counts;
            let mut cumulative: u64 = 0;
            for (i, bound) in LATENCY_BOUNDS_SECONDS.iter().enumerate() {
                cumulative = cumulative.saturating_add(counts.get(i).copied().unwrap_or(0));
                let le = format_f64(*bound);
                out.sample(
                    &format!("{name}_bucket"),
                    &labels(m, op, Some(&le)),
                    cumulative,
                );
            }
            // Everything, whatever the number of buckets the snapshot came with.
            let total = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
            out.sample(
                &format!("{name}_bucket"),
                &labels(m, op, Some("+Inf")),
                total,
            );
            out.sample(
                &format!("{name}_sum"),
                &labels(m, op, None),
                o.latency.sum_seconds,
            );
            out.sample(&format!("{name}_count"), &labels(m, op, None), total);
        }
    }
}

/// Bytes per mount, and the image counters of image mounts.
fn per_mount(out: &mut Text, mounts: &[&MountMetrics]) {
    let bytes: [Family<MountMetrics>; 2] = [
        ("read_bytes_total", "Bytes returned by READ.", |m| {
            m.bytes_read
        }),
        ("written_bytes_total", "Bytes taken by WRITE.", |m| {
            m.bytes_written
        }),
    ];
    for (name, help, get) in bytes {
        out.header(name, "counter", help);
        for m in mounts {
            out.sample(name, &labels(m, None, None), get(m));
        }
    }

    let image: [Family<crate::mounts::ImageMetrics>; 7] = [
        (
            "image_chunk_hits_total",
            "Chunk reads served from the chunk store.",
            |i| i.chunk_hits,
        ),
        (
            "image_chunk_misses_total",
            "Chunk reads that had to load the chunk.",
            |i| i.chunk_misses,
        ),
        (
            "image_chunk_loads_total",
            "Chunks read from their blob, verified and decompressed.",
            |i| i.chunk_loads,
        ),
        (
            "image_chunk_loaded_bytes_total",
            "Bytes those chunk loads produced (decompressed).",
            |i| i.chunk_bytes_loaded,
        ),
        (
            "image_digest_failures_total",
            "Blobs whose sha256 did not match their digest.",
            |i| i.digest_failures,
        ),
        (
            "image_fs_verity_failures_total",
            "Blobs whose fs-verity measurement did not match the image's record.",
            |i| i.fs_verity_failures,
        ),
        (
            "image_load_failures_total",
            "Other chunk load failures (missing blob, corrupt data).",
            |i| i.load_failures,
        ),
    ];
    for (name, help, get) in image {
        out.header(name, "counter", help);
        for m in mounts {
            if let Some(i) = &m.image {
                out.sample(name, &labels(m, None, None), get(i));
            }
        }
    }
    let name = "image_metadata_bytes";
    out.header(
        name,
        "gauge",
        "Heap bytes the image's decoded metadata holds (shared by mounts of one image).",
    );
    for m in mounts {
        if let Some(i) = &m.image {
            out.sample(name, &labels(m, None, None), i.metadata_bytes);
        }
    }
}

/// The shared chunk store.
fn chunk_store(out: &mut Text, s: &MetricsSnapshot) {
    let c = &s.chunk_store;
    let rows: [(&str, &str, &str, u64); 7] = [
        (
            "chunk_store_capacity_bytes",
            "gauge",
            "Bytes the chunk store may hold.",
            c.capacity_bytes,
        ),
        (
            "chunk_store_used_bytes",
            "gauge",
            "Bytes the chunk store holds.",
            c.used_bytes,
        ),
        (
            "chunk_store_chunks",
            "gauge",
            "Chunks the chunk store holds.",
            c.chunks,
        ),
        (
            "chunk_store_hits_total",
            "counter",
            "Chunk store lookups that found their chunk.",
            c.hits,
        ),
        (
            "chunk_store_misses_total",
            "counter",
            "Chunk store lookups that did not.",
            c.misses,
        ),
        (
            "chunk_store_inserts_total",
            "counter",
            "Chunks stored.",
            c.inserts,
        ),
        (
            "chunk_store_evictions_total",
            "counter",
            "Chunks dropped to make room.",
            c.evictions,
        ),
    ];
    for (name, kind, help, v) in rows {
        out.scalar(name, kind, help, v);
    }
}

/// `mountpoint="...",fs_type="..."[,op="..."][,le="..."]`, values escaped.
fn labels(m: &MountMetrics, op: Option<&str>, le: Option<&str>) -> String {
    let mut l = format!(
        "mountpoint=\"{}\",fs_type=\"{}\"",
        escape_label(&m.mountpoint),
        escape_label(&m.fs_type)
    );
    if let Some(op) = op {
        let _ = write!(l, ",op=\"{}\"", escape_label(op));
    }
    if let Some(le) = le {
        let _ = write!(l, ",le=\"{le}\"");
    }
    l
}

/// A label value as the format wants it: `\` `"` and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A HELP text as the format wants it: `\` and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value or bound: integers without a fraction, infinities and NaN by name.
fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The text being written.
struct Text(String);

impl Text {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {PREFIX}{name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {PREFIX}{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, v: impl Value) {
        let _ = writeln!(self.0, "{PREFIX}{name}{{{labels}}} {}", v.text());
    }

    /// A family of one unlabelled sample.
    fn scalar(&mut self, name: &str, kind: &str, help: &str, v: impl Value) {
        self.header(name, kind, help);
        let _ = writeln!(self.0, "{PREFIX}{name} {}", v.text());
    }
}

/// A sample value: counters exactly (a u64 through f64 would lose its low digits past
/// 2^53), seconds as floats.
trait Value {
    fn text(&self) -> String;
}

impl Value for u64 {
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Value for f64 {
    fn text(&self) -> String {
        format_f64(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::{ChunkStoreMetrics, Histogram, ImageMetrics, Op, OpMetrics};

    fn mount(mp: &str, fs: &str, ops: Vec<OpMetrics>, image: Option<ImageMetrics>) -> MountMetrics {
        MountMetrics {
            mountpoint: mp.into(),
            fs_type: fs.into(),
            source: "/src".into(),
            slot: 1,
            generation: 0,
            ops,
            bytes_read: 4096,
            bytes_written: 0,
            image,
        }
    }

    fn read_op() -> OpMetrics {
        // 13 buckets: 2 under 5 us, 1 under 10 us, 3 under 1 ms, 1 over 1 s.
        let mut counts = vec![0; LATENCY_BOUNDS_SECONDS.len() + 1];
        counts[0] = 2;
        counts[1] = 1;
        counts[7] = 3;
        counts[12] = 1;
        OpMetrics {
            op: Op::Read,
            requests: 7,
            errors: 1,
            latency: Histogram {
                counts,
                sum_seconds: 2.5,
            },
        }
    }

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            uptime_seconds: 12.5,
            mounts_total: 2,
            umounts_total: 1,
            mount_failures_total: 3,
            chunk_store: ChunkStoreMetrics {
                capacity_bytes: 1 << 30,
                used_bytes: 65536,
                chunks: 1,
                hits: 5,
                misses: 1,
                inserts: 1,
                evictions: 0,
            },
            pseudo: mount("/", "pseudo", vec![], None),
            mounts: vec![mount(
                "/rafs/c1/lowerdir",
                "puzzlefs",
                vec![read_op()],
                Some(ImageMetrics {
                    chunk_hits: 9,
                    digest_failures: 2,
                    metadata_bytes: 811_176,
                    ..Default::default()
                }),
            )],
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn exact_lines_for_a_small_snapshot() {
        let text = render(&snapshot());
        let l = lines(&text);
        let mp = r#"mountpoint="/rafs/c1/lowerdir",fs_type="puzzlefs""#;
        for want in [
            "# HELP puzzlefs_uptime_seconds Seconds since the mount table was created.".to_string(),
            "# TYPE puzzlefs_uptime_seconds gauge".into(),
            "puzzlefs_uptime_seconds 12.5".into(),
            "# TYPE puzzlefs_live_mounts gauge".into(),
            "puzzlefs_live_mounts 1".into(),
            "# TYPE puzzlefs_mounts_total counter".into(),
            "puzzlefs_mounts_total 2".into(),
            "puzzlefs_umounts_total 1".into(),
            "puzzlefs_mount_failures_total 3".into(),
            "# TYPE puzzlefs_fuse_requests_total counter".into(),
            format!("puzzlefs_fuse_requests_total{{{mp},op=\"read\"}} 7"),
            format!("puzzlefs_fuse_errors_total{{{mp},op=\"read\"}} 1"),
            "# TYPE puzzlefs_fuse_request_duration_seconds histogram".into(),
            format!("puzzlefs_fuse_request_duration_seconds_bucket{{{mp},op=\"read\",le=\"0.000005\"}} 2"),
            format!("puzzlefs_fuse_request_duration_seconds_bucket{{{mp},op=\"read\",le=\"0.00001\"}} 3"),
            format!("puzzlefs_fuse_request_duration_seconds_bucket{{{mp},op=\"read\",le=\"0.0005\"}} 3"),
            format!("puzzlefs_fuse_request_duration_seconds_bucket{{{mp},op=\"read\",le=\"0.001\"}} 6"),
            format!("puzzlefs_fuse_request_duration_seconds_bucket{{{mp},op=\"read\",le=\"1\"}} 6"),
            format!("puzzlefs_fuse_request_duration_seconds_bucket{{{mp},op=\"read\",le=\"+Inf\"}} 7"),
            format!("puzzlefs_fuse_request_duration_seconds_sum{{{mp},op=\"read\"}} 2.5"),
            format!("puzzlefs_fuse_request_duration_seconds_count{{{mp},op=\"read\"}} 7"),
            format!("puzzlefs_read_bytes_total{{{mp}}} 4096"),
            "puzzlefs_read_bytes_total{mountpoint=\"/\",fs_type=\"pseudo\"} 4096".into(),
            format!("puzzlefs_written_bytes_total{{{mp}}} 0"),
            format!("puzzlefs_image_chunk_hits_total{{{mp}}} 9"),
            format!("puzzlefs_image_chunk_misses_total{{{mp}}} 0"),
            format!("puzzlefs_image_digest_failures_total{{{mp}}} 2"),
            format!("puzzlefs_image_fs_verity_failures_total{{{mp}}} 0"),
            format!("puzzlefs_image_load_failures_total{{{mp}}} 0"),
            "# TYPE puzzlefs_image_metadata_bytes gauge".into(),
            format!("puzzlefs_image_metadata_bytes{{{mp}}} 811176"),
            "# TYPE puzzlefs_chunk_store_capacity_bytes gauge".into(),
            "puzzlefs_chunk_store_capacity_bytes 1073741824".into(),
            "puzzlefs_chunk_store_used_bytes 65536".into(),
            "puzzlefs_chunk_store_chunks 1".into(),
            "# TYPE puzzlefs_chunk_store_hits_total counter".into(),
            "puzzlefs_chunk_store_hits_total 5".into(),
            "puzzlefs_chunk_store_misses_total 1".into(),
            "puzzlefs_chunk_store_inserts_total 1".into(),
            "puzzlefs_chunk_store_evictions_total 0".into(),
        ] {
            assert!(l.contains(&want.as_str()), "missing {want:?} in\n{text}");
        }
        // The pseudo tree has no image counters and no ops here.
        assert!(!text.contains("image_chunk_hits_total{mountpoint=\"/\""));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn histogram_is_cumulative_and_count_is_inf() {
        let text = render(&snapshot());
        let buckets: Vec<(String, u64)> = lines(&text)
            .into_iter()
            .filter(|l| l.starts_with("puzzlefs_fuse_request_duration_seconds_bucket"))
            .map(|l| {
                let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                (
                    le.to_string(),
                    l.rsplit(' ').next().unwrap().parse().unwrap(),
                )
            })
            .collect();
        assert_eq!(buckets.len(), LATENCY_BOUNDS_SECONDS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        let (last_le, inf) = buckets.last().unwrap();
        assert_eq!(last_le, "+Inf");
        let count_line = lines(&text)
            .into_iter()
            .find(|l| l.starts_with("puzzlefs_fuse_request_duration_seconds_count"))
            .unwrap();
        assert_eq!(
            count_line
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
            *inf
        );
        // Bounds are parseable floats matching the table's.
        for ((le, _), b) in buckets.iter().zip(LATENCY_BOUNDS_SECONDS) {
            assert_eq!(le.parse::<f64>().unwrap(), b);
        }
    }

    #[test]
    fn short_or_long_bucket_lists_still_add_up() {
        let mut s = snapshot();
        s.mounts[0].ops[0].latency.counts = vec![1, 1];
        let text = render(&s);
        assert!(text.contains("le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2\n"));
        s.mounts[0].ops[0].latency.counts = vec![1; 20];
        let text = render(&s);
        assert!(text.contains("le=\"1\"} 12\n"));
        assert!(text.contains("le=\"+Inf\"} 20\n"));
        assert!(text.contains(
            "_count{mountpoint=\"/rafs/c1/lowerdir\",fs_type=\"puzzlefs\",op=\"read\"} 20\n"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
        let mut s = snapshot();
        s.mounts[0].mountpoint = "/we\"ird\\dir\nx".into();
        let text = render(&s);
        assert!(
            text.contains(r#"puzzlefs_read_bytes_total{mountpoint="/we\"ird\\dir\nx",fs_type="puzzlefs"} 4096"#),
            "{text}"
        );
        // A newline in a value must never start a new line of output.
        assert!(lines(&text)
            .iter()
            .all(|l| l.starts_with('#') || l.starts_with("puzzlefs_")));
    }

    #[test]
    fn every_family_is_declared_once_and_contiguous() {
        let text = render(&snapshot());
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for l in lines(&text) {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(name.clone()), "{name} declared twice");
                current = name;
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| *f == current))
                    .unwrap_or(name);
                assert_eq!(family, current, "sample {l:?} outside its family");
            }
        }
        // Names stay distinct once `_total` is dropped (OpenMetrics parsers drop it).
        let bases: std::collections::HashSet<_> =
            seen.iter().map(|n| n.trim_end_matches("_total")).collect();
        assert_eq!(bases.len(), seen.len(), "{seen:?}");
        assert!(
            !text.contains("ino=") && !text.contains("inode"),
            "no inode labels"
        );
    }

    #[test]
    fn counters_are_exact_past_f64_precision() {
        let mut s = snapshot();
        s.chunk_store.hits = u64::MAX;
        s.mounts[0].bytes_read = (1 << 53) + 1;
        let text = render(&s);
        assert!(text.contains("\npuzzlefs_chunk_store_hits_total 18446744073709551615\n"));
        assert!(
            text.contains("fs_type=\"puzzlefs\"} 9007199254740993\n"),
            "{text}"
        );
    }

    #[test]
    fn floats() {
        assert_eq!(format_f64(1.0), "1");
        assert_eq!(format_f64(0.000005), "0.000005");
        assert_eq!(format_f64(f64::INFINITY), "+Inf");
        assert_eq!(format_f64(f64::NAN), "NaN");
        assert_eq!(format_f64(1e21), "1000000000000000000000");
    }
}
