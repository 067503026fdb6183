//! Image write benchmark (not a test): Ironclad's real write path against a
//! `curl | dd` baseline, on this machine, in one run.
//!
//! ```text
//! cargo run --release -p ironclad-agent --example write_bench -- [--dir DIR] [--gib N]
//! ```
//!
//! It makes a raw image of N GiB (default 2) of random data, the same content
//! as qcow2 (`qemu-img convert`) and as zstd, a 1 GiB raw image, and a sparse
//! 8 GiB qcow2 with 1 GiB of data; serves them from a loopback HTTP server
//! (this process); then times `curl URL | dd of=FILE bs=1M oflag=direct` and
//! Ironclad's `ImageWriter::write_whole_disk` (sha256 verified) in a child
//! process each, whose peak RSS (`VmHWM`) it reports. Files go to DIR
//! (default `target/write-bench`), about 4 × N + 10 GiB of space.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary panics on failure

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironclad_agent::disk::BlockDevice;
use ironclad_agent::image::checksum::Hasher;
use ironclad_agent::image::ImageWriter;
use ironclad_versioning::image_info::{ChecksumAlgorithm, ImageInfo};
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], &args[3], &args[4], args[5].parse().unwrap());
        return;
    }
    let mut dir = PathBuf::from("target/write-bench");
    let mut gib = 2u64;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--dir" => {
                dir = PathBuf::from(&args[i + 1]);
                i += 1;
            }
            "--gib" => {
                gib = args[i + 1].parse().unwrap();
                i += 1;
            }
            other => panic!("unknown argument {other}; use --dir DIR --gib N"),
        }
        i += 1;
    }
    parent(&dir, gib);
}

/// One write through the agent's real code path; prints seconds and peak RSS.
fn child(url: &str, sha: &str, disk: &str, size: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let report = rt.block_on(async {
        let w = ImageWriter::new(reqwest::Client::new());
        let info = ImageInfo {
            id: "bench".into(),
            urls: vec![url.to_owned()],
            ..Default::default()
        };
        let dev = BlockDevice {
            name: disk.to_owned(),
            path: PathBuf::from(disk),
            size,
            model: String::new(),
            vendor: String::new(),
            serial: None,
            wwn: None,
            rotational: false,
        };
        w.write_whole_disk(&info, ChecksumAlgorithm::Sha256, sha, &dev, None)
            .await
            .expect("write failed")
    });
    let secs = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| {
            v.trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .unwrap_or(0);
    println!(
        "{secs} {hwm} {} {} {}",
        report.data_bytes, report.format, report.compression
    );
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Hasher::new(ChecksumAlgorithm::Sha256);
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize_hex()
}

fn random_file(path: &Path, bytes: u64, seed: u64) {
    if path.exists() && std::fs::metadata(path).unwrap().len() == bytes {
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 4 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?} failed");
}

fn prepare(dir: &Path, gib: u64) -> Vec<(String, PathBuf)> {
    std::fs::create_dir_all(dir).unwrap();
    let raw = dir.join("image.raw");
    eprintln!("preparing images in {} ...", dir.display());
    random_file(&raw, gib * GIB, 1);
    let qcow = dir.join("image.qcow2");
    if !qcow.exists() {
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow));
    }
    let zst = dir.join("image.raw.zst");
    if !zst.exists() {
        run(Command::new("zstd")
            .args(["-q", "-1", "-T0", "-f", "-o"])
            .arg(&zst)
            .arg(&raw));
    }
    let one = dir.join("one.raw");
    random_file(&one, GIB, 2);
    let sparse_raw = dir.join("sparse.raw");
    let sparse = dir.join("sparse.qcow2");
    if !sparse.exists() {
        // 8 GiB virtual; 1 GiB of data in eight 128 MiB pieces, one per GiB.
        let f = std::fs::File::create(&sparse_raw).unwrap();
        f.set_len(8 * GIB).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut buf = vec![0u8; (8 * MIB) as usize];
        for g in 0..8u64 {
            for k in 0..16u64 {
                rng.fill_bytes(&mut buf);
                std::os::unix::fs::FileExt::write_all_at(&f, &buf, g * GIB + k * 8 * MIB).unwrap();
            }
        }
        drop(f);
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&sparse_raw)
            .arg(&sparse));
        std::fs::remove_file(&sparse_raw).unwrap();
    }
    vec![
        ("image.raw".into(), raw),
        ("image.qcow2".into(), qcow),
        ("image.raw.zst".into(), zst),
        ("one.raw".into(), one),
        ("sparse.qcow2".into(), sparse),
    ]
}

/// A loopback HTTP/1.1 file server with Range support, reading 1 MiB at a time.
async fn serve_files(files: Arc<Vec<(String, PathBuf)>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let files = files.clone();
            tokio::spawn(async move {
                let _ = serve_one(sock, files).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn serve_one(
    sock: tokio::net::TcpStream,
    files: Arc<Vec<(String, PathBuf)>>,
) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut reader = BufReader::new(sock);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let name = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_owned();
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
    let mut sock = reader.into_inner();
    let Some((_, path)) = files.iter().find(|(n, _)| *n == name) else {
        sock.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    let mut file = tokio::fs::File::open(path).await?;
    let total = file.metadata().await?.len();
    let (start, end, head) = match range {
        Some((a, b)) => {
            let end = b.map_or(total, |b| (b + 1).min(total));
            (
                a,
                end,
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{}/{total}\r\n",
                    end - 1
                ),
            )
        }
        None => (0, total, "HTTP/1.1 200 OK\r\n".to_owned()),
    };
    let head = format!(
        "{head}Content-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        end - start
    );
    sock.write_all(head.as_bytes()).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut left = end - start;
    let mut buf = vec![0u8; MIB as usize];
    while left > 0 {
        let n = (left as usize).min(buf.len());
        file.read_exact(&mut buf[..n]).await?;
        sock.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

fn fresh_target(path: &Path, size: u64) {
    let _ = std::fs::remove_file(path);
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    run(&mut Command::new("sync"));
}

fn baseline(url: &str, target: &Path) -> f64 {
    fresh_target(target, 0);
    let started = Instant::now();
    let cmd = format!(
        "curl -sSf '{url}' | dd of='{}' bs=1M oflag=direct status=none",
        target.display()
    );
    run(Command::new("bash").args(["-o", "pipefail", "-c", &cmd]));
    started.elapsed().as_secs_f64()
}

fn ironclad(url: &str, sha: &str, target: &Path, size: u64) -> (f64, u64, String) {
    fresh_target(target, size);
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let out = Command::new(exe)
        .args([
            "--child",
            url,
            sha,
            target.to_str().unwrap(),
            &size.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "the writer failed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = text.split_whitespace();
    let _inner: f64 = parts.next().unwrap().parse().unwrap();
    let hwm_kib: u64 = parts.next().unwrap().parse().unwrap();
    (secs, hwm_kib, text.trim().to_owned())
}

fn parent(dir: &Path, gib: u64) {
    let files = prepare(dir, gib);
    let shas: Vec<(String, String)> = files
        .iter()
        .map(|(n, p)| (n.clone(), sha256_file(p)))
        .collect();
    let sha = |n: &str| shas.iter().find(|(m, _)| m == n).unwrap().1.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let base = rt.block_on(serve_files(Arc::new(files.clone())));
    let target = dir.join("target.disk");
    let disk_size = 9 * GIB;
    let raw_bytes = gib * GIB;
    let mb = |bytes: u64, secs: f64| bytes as f64 / 1e6 / secs;

    println!(
        "write_bench: {gib} GiB random raw image, loopback HTTP, target {}",
        target.display()
    );
    let base_secs = baseline(&format!("{base}/image.raw"), &target);
    println!(
        "{:<38} {:>8.2} s {:>8.0} MB/s   ratio 1.00   peak RSS -",
        "baseline curl | dd oflag=direct (raw)",
        base_secs,
        mb(raw_bytes, base_secs)
    );
    let mut rows = Vec::new();
    let mut one_raw = 0.0;
    for (label, name) in [
        ("ironclad raw + sha256", "image.raw"),
        ("ironclad qcow2 + sha256", "image.qcow2"),
        ("ironclad zstd raw + sha256", "image.raw.zst"),
        ("ironclad 1 GiB raw + sha256", "one.raw"),
        ("ironclad sparse 8 GiB qcow2 (1 GiB data)", "sparse.qcow2"),
    ] {
        let (secs, hwm, detail) =
            ironclad(&format!("{base}/{name}"), &sha(name), &target, disk_size);
        let content = match name {
            "one.raw" => GIB,
            "sparse.qcow2" => 8 * GIB,
            _ => raw_bytes,
        };
        let ratio = match name {
            "one.raw" => {
                one_raw = secs;
                format!("{:.2}", base_secs * (GIB as f64 / raw_bytes as f64) / secs)
            }
            "sparse.qcow2" => format!("time {:.2} × 1 GiB raw", secs / one_raw),
            _ => format!("{:.2}", base_secs / secs),
        };
        println!(
            "{label:<38} {secs:>8.2} s {:>8.0} MB/s   ratio {ratio}   peak RSS {:.1} MiB   ({detail})",
            mb(content, secs),
            hwm as f64 / 1024.0
        );
        rows.push((label, secs, hwm));
    }
    let _ = std::fs::remove_file(&target);
    let _ = Duration::from_secs(0);
}
