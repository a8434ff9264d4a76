//! FILE columns: upload a 9 MiB file from a path (with progress), read its
//! FileRef back, download it to another file, compare, and print the time
//! each way and the process's peak memory (both directions stream: neither
//! holds the file in memory).
//!
//! `cargo run -p kalam-examples --example files` (the embedded test server),
//! or with `KALAMDB_URL=http://127.0.0.1:PORT` for a real server.

mod common;

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kalam_tokio::{AuthProvider, FileRef, FileUpload, KalamLinkClient, QueryRequest};

const SIZE: usize = 9 << 20;

#[tokio::main]
async fn main() -> kalam_tokio::Result<()> {
    let target = common::target().await;
    let client = KalamLinkClient::builder()
        .base_url(&target.url)
        .auth(AuthProvider::system_user_auth(target.root_password.clone()))
        .build()?;
    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS example_files")
        .await?;
    client
        .execute_query(
            "CREATE TABLE IF NOT EXISTS example_files.docs (id BIGINT PRIMARY KEY, f FILE) WITH (TYPE='USER')",
        )
        .await?;

    let dir = std::env::temp_dir();
    let source = dir.join(format!("kalam-example-{}.bin", std::process::id()));
    let copy = dir.join(format!("kalam-example-{}-copy.bin", std::process::id()));
    // Written and compared in chunks, so that the peak memory below is the client's.
    let mut x = 0x2545_f491u32;
    let mut writer = std::io::BufWriter::new(std::fs::File::create(&source).map_err(kalam_tokio::Error::other)?);
    for _ in 0..SIZE {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        writer.write_all(&[x as u8]).map_err(kalam_tokio::Error::other)?;
    }
    writer.flush().map_err(kalam_tokio::Error::other)?;
    drop(writer);

    let id = std::process::id() as i64;
    let insert = QueryRequest::new(r#"INSERT INTO example_files.docs (id, f) VALUES ($1, FILE("doc"))"#).param(id);
    let started = Instant::now();
    let quarter = AtomicU64::new(0); // the progress callback is `Fn`: called from the client's task
    client
        .execute_with_files_progress(insert, vec![FileUpload::from_path("doc", &source)], move |p| {
            let q = p.sent * 4 / p.total.max(1);
            if quarter.fetch_max(q, Ordering::Relaxed) < q {
                println!("  sent {:>8} of {} bytes", p.sent, p.total);
            }
        })
        .await?;
    let up = started.elapsed();

    let rows = client
        .execute(QueryRequest::new("SELECT f FROM example_files.docs WHERE id = $1").param(id))
        .await?;
    let file: FileRef = rows.rows().next().expect("the row").get("f")?;
    println!(
        "stored as {} ({} bytes, sha256 {})",
        file.stored_name(),
        file.size,
        file.sha256
    );

    let started = Instant::now();
    // A Tokio file where the client takes a `futures` writer: `compat`.
    let mut out = tokio::fs::File::create(&copy)
        .await
        .map_err(kalam_tokio::Error::other)?;
    let n = client
        .download_file(&file, "example_files", "docs", &mut kalam_tokio::compat(&mut out))
        .await?;
    let down = started.elapsed();
    drop(out);

    let same = same_contents(&source, &copy).map_err(kalam_tokio::Error::other)?;
    let mib = SIZE as f64 / (1 << 20) as f64;
    println!(
        "upload {:.0} ms ({:.0} MiB/s), download {n} bytes in {:.0} ms ({:.0} MiB/s), identical: {same}",
        up.as_secs_f64() * 1e3,
        mib / up.as_secs_f64(),
        down.as_secs_f64() * 1e3,
        mib / down.as_secs_f64()
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(peak) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!("peak memory: {}", peak.trim_start_matches("VmHWM:").trim());
    }
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&copy);
    assert!(same, "the downloaded file differs");
    Ok(())
}

fn same_contents(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<bool> {
    let (mut a, mut b) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = a.read(&mut x)?;
        let mut m = 0;
        while m < n {
            let k = b.read(&mut y[m..n])?;
            if k == 0 {
                return Ok(false);
            }
            m += k;
        }
        if x[..n] != y[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(b.read(&mut y)? == 0);
        }
    }
}
