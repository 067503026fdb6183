//! The image pipeline end to end through its real code path
//! (`ImageWriter::write_whole_disk`), against a real HTTP server over real
//! sockets and reference images made by `qemu-img`.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironclad_agent::disk::BlockDevice;
use ironclad_agent::image::checksum::Hasher;
use ironclad_agent::image::source::RetryPolicy;
use ironclad_agent::image::{ImageError, ImageWriter, WriteReport};
use ironclad_versioning::agent_api::AgentErrorKind;
use ironclad_versioning::image_info::{ChecksumAlgorithm, ImageInfo};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------- the server

/// A small HTTP/1.1 image server. Paths are `/<mode>/<name>`:
/// `ok` (Range supported), `norange` (Range ignored), `drop` (each of the
/// first `drops` responses is cut at a random offset), `dropnorange`,
/// `stall` (the first half of the file, then silence), `flaky` (the first `errors`
/// requests get 503). Unknown names get 404.
struct Server {
    url: String,
    files: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
    drops: Arc<AtomicU32>,
    errors: Arc<AtomicU32>,
    requests: Arc<AtomicU32>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = Self {
            url: format!("http://{addr}"),
            files: Arc::default(),
            drops: Arc::new(AtomicU32::new(0)),
            errors: Arc::new(AtomicU32::new(0)),
            requests: Arc::new(AtomicU32::new(0)),
        };
        let (files, drops, errors, requests) = (
            s.files.clone(),
            s.drops.clone(),
            s.errors.clone(),
            s.requests.clone(),
        );
        tokio::spawn(async move {
            let mut seed = 7u64;
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                seed += 1;
                let st = (
                    files.clone(),
                    drops.clone(),
                    errors.clone(),
                    requests.clone(),
                );
                tokio::spawn(async move {
                    let _ = serve(sock, st, seed).await;
                });
            }
        });
        s
    }

    fn add(&self, name: &str, data: Vec<u8>) -> String {
        self.files
            .lock()
            .unwrap()
            .insert(name.to_owned(), Arc::new(data));
        name.to_owned()
    }
}

type ServerState = (
    Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
    Arc<AtomicU32>,
    Arc<AtomicU32>,
    Arc<AtomicU32>,
);

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

async fn serve(sock: TcpStream, st: ServerState, seed: u64) -> std::io::Result<()> {
    let (files, drops, errors, requests) = st;
    let mut reader = BufReader::new(sock);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range: Option<(u64, Option<u64>)> = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).await?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (a, b) = v.trim().split_once('-').unwrap();
            range = Some((a.parse().unwrap(), b.parse().ok()));
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let mut sock = reader.into_inner();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let mode = parts.next().unwrap_or_default().to_owned();
    let name = parts.next().unwrap_or_default().to_owned();
    let data = files.lock().unwrap().get(&name).cloned();
    let Some(data) = data else {
        sock.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        )
        .await?;
        return Ok(());
    };
    if mode == "flaky" && take_one(&errors) {
        sock.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await?;
        return Ok(());
    }
    let total = data.len() as u64;
    let honour_range = !mode.contains("norange");
    let (status, start, end) = match range {
        Some((a, b)) if honour_range => {
            let end = b.map_or(total, |b| (b + 1).min(total));
            ("206 Partial Content", a.min(total), end)
        }
        _ => ("200 OK", 0, total),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        end - start
    );
    if status.starts_with("206") {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{total}\r\n",
            end.max(1) - 1
        ));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    let body = &data[start as usize..end as usize];
    let cut = if mode.starts_with("drop") && body.len() > 1 && take_one(&drops) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Some(rng.gen_range(1..body.len()))
    } else if mode == "stall" {
        // Up to the middle of the file, then silence (resumed requests get nothing).
        Some(((total / 2).saturating_sub(start) as usize).min(body.len()))
    } else {
        None
    };
    let send = cut.unwrap_or(body.len());
    for piece in body[..send].chunks(64 * 1024) {
        sock.write_all(piece).await?;
    }
    sock.flush().await?;
    if mode == "stall" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------- helpers

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (package qemu-utils) is needed");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw image of `len` bytes: random data with holes of zeros (some
/// aligned, some not), and data in the first MiB.
fn raw_image(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut img = vec![0u8; len];
    let mut at = 0;
    let mut data = true;
    while at < len {
        let run = rng.gen_range(1..96 * 1024).min(len - at);
        if data {
            rng.fill(&mut img[at..at + run]);
        }
        at += run;
        data = !data;
    }
    img
}

fn sha256(data: &[u8]) -> String {
    let mut h = Hasher::new(ChecksumAlgorithm::Sha256);
    h.update(data);
    h.finalize_hex()
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        retries: 8,
        interval: Duration::from_millis(10),
        stall_timeout: Duration::from_secs(10),
    }
}

fn writer(policy: RetryPolicy) -> ImageWriter {
    let mut w = ImageWriter::new(reqwest::Client::new());
    w.policy = policy;
    w.progress_every = Duration::from_secs(1);
    w
}

/// A disk file of `size` bytes whose first `garbage` bytes are 0xee.
fn disk(dir: &Path, name: &str, size: u64, garbage: usize) -> BlockDevice {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let mut f = std::io::BufWriter::new(f);
    f.write_all(&vec![0xeeu8; garbage]).unwrap();
    f.flush().unwrap();
    BlockDevice {
        name: path.display().to_string(),
        path,
        size,
        model: String::new(),
        vendor: String::new(),
        serial: None,
        wwn: None,
        rotational: false,
    }
}

fn info(urls: Vec<String>, disk_format: Option<&str>) -> ImageInfo {
    ImageInfo {
        id: "test-image".into(),
        urls,
        disk_format: disk_format.map(str::to_owned),
        ..Default::default()
    }
}

async fn write_with(
    w: &ImageWriter,
    info: &ImageInfo,
    served: &[u8],
    dev: &BlockDevice,
    permitted: Option<&[String]>,
) -> Result<WriteReport, ImageError> {
    w.write_whole_disk(
        info,
        ChecksumAlgorithm::Sha256,
        &sha256(served),
        dev,
        permitted,
    )
    .await
}

/// The disk holds `img` followed by zeros only.
fn assert_disk(dev: &BlockDevice, img: &[u8], what: &str) {
    let on_disk = std::fs::read(&dev.path).unwrap();
    if on_disk[..img.len()] != img[..] {
        let first = on_disk.iter().zip(img).position(|(a, b)| a != b).unwrap();
        panic!("{what}: the disk differs from the image at byte {first}");
    }
    assert!(
        on_disk[img.len()..].iter().all(|&b| b == 0),
        "{what}: the disk beyond the image is not zero"
    );
}

fn head_is_zero(dev: &BlockDevice) -> bool {
    let on_disk = std::fs::read(&dev.path).unwrap();
    on_disk[..MIB].iter().all(|&b| b == 0)
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        other => panic!("unknown compression {other}"),
    }
}

struct Fixtures {
    dir: tempfile::TempDir,
    raw: Vec<u8>,
}

impl Fixtures {
    /// A raw image (6 MiB + 1.5 KiB, so the last cluster is partial) and its qemu-img conversions.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(6 * MIB + 1536, 1);
        std::fs::write(dir.path().join("raw"), &raw).unwrap();
        Self { dir, raw }
    }

    fn convert(&self, name: &str, opts: &[&str]) -> Vec<u8> {
        let out = self.dir.path().join(name);
        let src = self.dir.path().join("raw");
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(opts);
        args.push(src.to_str().unwrap());
        args.push(out.to_str().unwrap());
        qemu_img(&args);
        std::fs::read(&out).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_round_trips_against_qemu_img() {
    let fx = Fixtures::new();
    let server = Server::start().await;
    let w = writer(policy());
    let v2 = fx.convert("v2.qcow2", &["-o", "compat=0.10"]);
    let v3 = fx.convert("v3.qcow2", &["-o", "compat=1.1"]);
    let small = fx.convert("small.qcow2", &["-o", "cluster_size=4096"]);
    let big = fx.convert("big.qcow2", &["-o", "cluster_size=2M"]);
    let deflate = fx.convert("deflate.qcow2", &["-c"]);
    let zstdc = fx.convert("zstd.qcow2", &["-c", "-o", "compression_type=zstd"]);
    let v2c = fx.convert("v2c.qcow2", &["-c", "-o", "compat=0.10"]);
    // Cross-check qemu-img itself: converting back gives the raw original.
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        fx.path("zstd.qcow2").to_str().unwrap(),
        fx.path("back.raw").to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(fx.path("back.raw")).unwrap(), fx.raw);

    let cases: Vec<(&str, Vec<u8>, &str, &str, &str)> = vec![
        // name, bytes served, declared disk_format, expected format, expected compression
        ("raw", fx.raw.clone(), "raw", "raw", "none"),
        ("raw.gz", compress("gzip", &fx.raw), "raw", "raw", "gzip"),
        ("raw.xz", compress("xz", &fx.raw), "raw", "raw", "xz"),
        ("raw.zst", compress("zstd", &fx.raw), "raw", "raw", "zstd"),
        ("raw.bz2", compress("bzip2", &fx.raw), "raw", "raw", "bzip2"),
        ("v2.qcow2", v2.clone(), "qcow2", "qcow2", "none"),
        ("v3.qcow2", v3.clone(), "qcow2", "qcow2", "none"),
        ("small.qcow2", small, "qcow2", "qcow2", "none"),
        ("big.qcow2", big, "qcow2", "qcow2", "none"),
        ("deflate.qcow2", deflate.clone(), "qcow2", "qcow2", "none"),
        ("zstd.qcow2", zstdc.clone(), "qcow2", "qcow2", "none"),
        ("v2c.qcow2", v2c, "qcow2", "qcow2", "none"),
        (
            "v3.qcow2.zst",
            compress("zstd", &v3),
            "qcow2",
            "qcow2",
            "zstd",
        ),
        (
            "deflate.qcow2.gz",
            compress("gzip", &deflate),
            "qcow2",
            "qcow2",
            "gzip",
        ),
        (
            "zstd.qcow2.xz",
            compress("xz", &zstdc),
            "qcow2",
            "qcow2",
            "xz",
        ),
    ];
    let size = 12 * MIB as u64;
    for (name, bytes, declared, format, compression) in cases {
        server.add(name, bytes.clone());
        std::fs::write(fx.path(name), &bytes).unwrap();
        // Random access (Range) where the format can use it, stream order
        // without it, and a local file.
        let urls = [
            format!("{}/ok/{name}", server.url),
            format!("{}/norange/{name}", server.url),
            format!("file://{}", fx.path(name).display()),
        ];
        for url in urls {
            let what = format!("{name} via {url}");
            let dev = disk(fx.dir.path(), "disk", size, fx.raw.len());
            let report = write_with(&w, &info(vec![url], Some(declared)), &bytes, &dev, None)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(report.format, format, "{what}");
            assert_eq!(report.compression, compression, "{what}");
            assert_eq!(report.bytes, bytes.len() as u64, "{what}");
            assert_disk(&dev, &fx.raw, &what);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_are_checked_against_disk_format_and_policy() {
    let fx = Fixtures::new();
    let w = writer(policy());
    let v3 = fx.convert("v3.qcow2", &[]);
    std::fs::write(fx.path("v3.qcow2"), &v3).unwrap();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        fx.path("raw").to_str().unwrap(),
        fx.path("x.vmdk").to_str().unwrap(),
    ]);
    let vmdk = std::fs::read(fx.path("x.vmdk")).unwrap();
    let size = 12 * MIB as u64;
    let url = |n: &str| format!("file://{}", fx.path(n).display());
    let only_raw = vec!["raw".to_owned()];
    type Case<'a> = (
        &'a str,
        &'a [u8],
        Option<&'a str>,
        Option<&'a [String]>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "v3.qcow2",
            &v3,
            Some("raw"),
            None,
            "declares disk_format \"raw\"",
        ),
        (
            "raw",
            &fx.raw,
            Some("qcow2"),
            None,
            "declares disk_format \"qcow2\"",
        ),
        (
            "v3.qcow2",
            &v3,
            Some("qcow2"),
            Some(&only_raw),
            "not among the permitted",
        ),
        ("x.vmdk", &vmdk, None, None, "vmdk format"),
    ];
    for (name, bytes, declared, permitted, message) in cases {
        let dev = disk(fx.dir.path(), "disk", size, size as usize);
        let err = write_with(&w, &info(vec![url(name)], declared), bytes, &dev, permitted)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), AgentErrorKind::InvalidImage, "{name}: {err}");
        assert!(err.to_string().contains(message), "{name}: {err}");
        // Refused before anything was written: the disk is untouched.
        let on_disk = std::fs::read(&dev.path).unwrap();
        assert!(
            on_disk.iter().all(|&b| b == 0xee),
            "{name}: the disk was written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_qcow2_images_are_refused_before_writing() {
    let fx = Fixtures::new();
    let server = Server::start().await;
    let w = writer(policy());
    let base = fx.path("v3.qcow2");
    std::fs::write(&base, fx.convert("v3.qcow2", &[])).unwrap();
    let over = fx.path("overlay.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        over.to_str().unwrap(),
    ]);
    let ext = fx.path("external.qcow2");
    let data_file = fx.path("external.data");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", data_file.display()),
        ext.to_str().unwrap(),
        "4M",
    ]);
    let v3 = std::fs::read(&base).unwrap();
    let patch = |at: usize, bytes: &[u8]| {
        let mut v = v3.clone();
        v[at..at + bytes.len()].copy_from_slice(bytes);
        v
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("backing", std::fs::read(&over).unwrap(), "backing file"),
        (
            "external",
            std::fs::read(&ext).unwrap(),
            "external data file",
        ),
        (
            "cluster-bits",
            patch(20, &30u32.to_be_bytes()),
            "cluster_bits",
        ),
        (
            "l1-beyond",
            patch(40, &(1u64 << 40).to_be_bytes()),
            "L1 table",
        ),
        ("l1-on-refcount", patch(40, &v3[48..56]), "overlaps"),
        (
            "l1-huge",
            patch(36, &0x0200_0000u32.to_be_bytes()),
            "L1 table",
        ),
        ("encrypted", patch(32, &1u32.to_be_bytes()), "encrypted"),
        (
            "unknown-feature",
            patch(72, &[0x80]),
            "unknown incompatible",
        ),
        ("corrupt-bit", patch(79, &[2]), "corrupt"),
    ];
    let size = 12 * MIB as u64;
    for (name, bytes, message) in cases {
        server.add(name, bytes.clone());
        for mode in ["ok", "norange"] {
            let dev = disk(fx.dir.path(), "disk", size, size as usize);
            let url = format!("{}/{mode}/{name}", server.url);
            let err = write_with(&w, &info(vec![url], Some("qcow2")), &bytes, &dev, None)
                .await
                .unwrap_err();
            assert_eq!(
                err.kind(),
                AgentErrorKind::InvalidImage,
                "{name} {mode}: {err}"
            );
            assert!(err.to_string().contains(message), "{name} {mode}: {err}");
            let on_disk = std::fs::read(&dev.path).unwrap();
            assert!(
                on_disk.iter().all(|&b| b == 0xee),
                "{name} {mode}: the disk was written"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_corrupted_images_fail_cleanly() {
    let fx = Fixtures::new();
    let w = writer(policy());
    let small = raw_image(2 * MIB + 4096, 9);
    std::fs::write(fx.path("raw"), &small).unwrap();
    let inputs = vec![
        (
            "v3.qcow2",
            fx.convert("v3.qcow2", &["-o", "cluster_size=16384"]),
        ),
        (
            "deflate.qcow2",
            fx.convert("deflate.qcow2", &["-c", "-o", "cluster_size=16384"]),
        ),
        (
            "zstd.qcow2",
            fx.convert(
                "zstd.qcow2",
                &["-c", "-o", "compression_type=zstd,cluster_size=16384"],
            ),
        ),
        ("raw.gz", compress("gzip", &small)),
        ("raw.xz", compress("xz", &small)),
        ("raw.zst", compress("zstd", &small)),
        ("raw.bz2", compress("bzip2", &small)),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let size = 8 * MIB as u64;
    let mut failures = 0;
    let mut runs = 0;
    for (name, bytes) in &inputs {
        let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
        for _ in 0..4 {
            let cut = rng.gen_range(1..bytes.len());
            variants.push((format!("{name} cut at {cut}"), bytes[..cut].to_vec()));
        }
        for _ in 0..6 {
            let mut v = bytes.clone();
            // Corrupt the metadata-rich start more often than the data.
            let span = if rng.gen_bool(0.6) {
                v.len().min(128 * 1024)
            } else {
                v.len()
            };
            for _ in 0..rng.gen_range(1..8) {
                let at = rng.gen_range(0..span);
                v[at] ^= rng.gen_range(1..=255u8);
            }
            variants.push((format!("{name} corrupted"), v));
        }
        // Stream order too: the same corruptions inside gzip.
        if name.ends_with("qcow2") {
            let wrapped: Vec<(String, Vec<u8>)> = variants
                .iter()
                .take(5)
                .map(|(n, v)| (format!("{n} (gzip)"), compress("gzip", v)))
                .collect();
            variants.extend(wrapped);
        }
        for (what, v) in variants {
            std::fs::write(fx.path("input"), &v).unwrap();
            let dev = disk(fx.dir.path(), "disk", size, 0);
            let url = format!("file://{}", fx.path("input").display());
            runs += 1;
            match write_with(&w, &info(vec![url], None), &v, &dev, None).await {
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    assert!(
                        matches!(
                            e.kind(),
                            AgentErrorKind::InvalidImage | AgentErrorKind::ImageWriteError
                        ),
                        "{what}: unexpected {:?}: {e}",
                        e.kind()
                    );
                    assert!(!e.to_string().is_empty());
                    assert!(head_is_zero(&dev), "{what}: the first MiB was written: {e}");
                }
            }
        }
    }
    assert!(
        failures > runs / 2,
        "only {failures} of {runs} damaged images failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_resume_after_random_drops_and_still_verify() {
    let fx = Fixtures::new();
    let server = Server::start().await;
    let w = writer(policy());
    let zst = compress("zstd", &fx.raw);
    let qcow = fx.convert("v3.qcow2", &[]);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("raw", "drop", fx.raw.clone()),
        ("raw.zst", "drop", zst),
        ("v3.qcow2", "drop", qcow),
        ("raw", "dropnorange", fx.raw.clone()),
    ];
    for (name, mode, bytes) in cases {
        server.add(name, bytes.clone());
        server.drops.store(5, Ordering::SeqCst);
        let dev = disk(fx.dir.path(), "disk", 12 * MIB as u64, fx.raw.len());
        let url = format!("{}/{mode}/{name}", server.url);
        let report = write_with(&w, &info(vec![url], None), &bytes, &dev, None)
            .await
            .unwrap_or_else(|e| panic!("{name} {mode}: {e}"));
        assert_eq!(server.drops.load(Ordering::SeqCst), 0, "{name} {mode}");
        assert!(report.resumes >= 1, "{name} {mode}: {report:?}");
        assert_eq!(report.bytes, bytes.len() as u64);
        assert_disk(&dev, &fx.raw, &format!("{name} {mode}"));
    }
    // A broken download whose bytes do not match still fails the checksum.
    server.drops.store(3, Ordering::SeqCst);
    let dev = disk(fx.dir.path(), "disk", 12 * MIB as u64, 0);
    let err = w
        .write_whole_disk(
            &info(vec![format!("{}/drop/raw", server.url)], None),
            ChecksumAlgorithm::Sha256,
            &"0".repeat(64),
            &dev,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AgentErrorKind::ImageChecksumError, "{err}");
    assert!(head_is_zero(&dev));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_fail_at_once_and_server_errors_are_retried() {
    let fx = Fixtures::new();
    let server = Server::start().await;
    let slow_retry = RetryPolicy {
        retries: 5,
        interval: Duration::from_secs(3),
        stall_timeout: Duration::from_secs(10),
    };
    let w = writer(slow_retry);
    server.add("raw", fx.raw.clone());
    let dev = disk(fx.dir.path(), "disk", 12 * MIB as u64, fx.raw.len());

    // 404: no retry, ImageDownloadError at once.
    let started = Instant::now();
    let err = write_with(
        &w,
        &info(vec![format!("{}/ok/missing", server.url)], None),
        &fx.raw,
        &dev,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), AgentErrorKind::ImageDownloadError);
    assert!(err.to_string().contains("404"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Several URLs are tried in order: the 404 one, then the good one.
    let urls = vec![
        format!("{}/ok/missing", server.url),
        format!("{}/ok/raw", server.url),
    ];
    write_with(&w, &info(urls, None), &fx.raw, &dev, None)
        .await
        .unwrap();
    assert_disk(&dev, &fx.raw, "second URL");

    // 503 twice, then the image: retried with back-off.
    let w = writer(policy());
    server.errors.store(2, Ordering::SeqCst);
    let before = server.requests.load(Ordering::SeqCst);
    let dev = disk(fx.dir.path(), "disk", 12 * MIB as u64, fx.raw.len());
    write_with(
        &w,
        &info(vec![format!("{}/flaky/raw", server.url)], None),
        &fx.raw,
        &dev,
        None,
    )
    .await
    .unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst) - before, 3);
    assert_disk(&dev, &fx.raw, "after 503s");

    // 503 for longer than the retries allow: ImageDownloadError naming the status.
    let few = RetryPolicy {
        retries: 2,
        ..policy()
    };
    server.errors.store(100, Ordering::SeqCst);
    let err = write_with(
        &writer(few),
        &info(vec![format!("{}/flaky/raw", server.url)], None),
        &fx.raw,
        &dev,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), AgentErrorKind::ImageDownloadError);
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_hits_the_stall_timeout() {
    let fx = Fixtures::new();
    let server = Server::start().await;
    server.add("raw", fx.raw.clone());
    let w = writer(RetryPolicy {
        retries: 1,
        interval: Duration::from_millis(10),
        stall_timeout: Duration::from_millis(300),
    });
    let dev = disk(fx.dir.path(), "disk", 12 * MIB as u64, 0);
    let started = Instant::now();
    let err = write_with(
        &w,
        &info(vec![format!("{}/stall/raw", server.url)], None),
        &fx.raw,
        &dev,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), AgentErrorKind::ImageDownloadError);
    assert!(err.to_string().contains("stall"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(head_is_zero(&dev));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_runs_leave_holes_in_the_target() {
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB virtual, 2 MiB of data (one at the start, one in the middle).
    let mut img = vec![0u8; 64 * MIB];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    rng.fill(&mut img[..MIB]);
    rng.fill(&mut img[40 * MIB..41 * MIB]);
    std::fs::write(dir.path().join("sparse.raw"), &img).unwrap();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        dir.path().join("sparse.raw").to_str().unwrap(),
        dir.path().join("sparse.qcow2").to_str().unwrap(),
    ]);
    let w = writer(policy());
    for name in ["sparse.raw", "sparse.qcow2"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        // The disk starts fully allocated with garbage.
        let dev = disk(dir.path(), "disk", 64 * MIB as u64, 64 * MIB);
        let url = format!("file://{}", dir.path().join(name).display());
        let report = write_with(&w, &info(vec![url], None), &bytes, &dev, None)
            .await
            .unwrap();
        assert_eq!(report.image_size, 64 * MIB as u64, "{name}");
        assert!(report.data_bytes <= 2 * MIB as u64, "{name}: {report:?}");
        assert_disk(&dev, &img, name);
        let allocated = std::fs::metadata(&dev.path).unwrap().blocks() * 512;
        assert!(
            allocated <= 4 * MIB as u64,
            "{name}: {allocated} bytes allocated for 2 MiB of data"
        );
    }
}
