//! Shared by the integration tests: a pool on disk, a server on a random port, and a
//! plain HTTP/1.1 client over a socket (so the tests do not share the library's client).

#![allow(dead_code)] // each test file uses a different part

use mirage_study::load_test::write_synthetic_pool;
use mirage_study::{start, RunningServer, ServeOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

pub const TOKEN: &str = "test-admin-token-0123456789";

pub struct TestServer {
    pub server: RunningServer,
    pub db: PathBuf,
    pub dir: tempfile::TempDir,
    /// The study made from the pool: `kodak`.
    pub study: String,
}

/// A server with one study (`kodak`, `images` images × 4 conditions) on 127.0.0.1:0.
pub async fn server(images: usize) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("kodak");
    write_synthetic_pool(&pool, images).unwrap();
    let db = dir.path().join("votes.sqlite");
    let server = start(ServeOptions {
        addr: "127.0.0.1:0".into(),
        db: db.clone(),
        admin_token: Some(TOKEN.into()),
        pools: vec![pool],
        ..ServeOptions::default()
    })
    .await
    .unwrap();
    TestServer {
        server,
        db,
        dir,
        study: "kodak".into(),
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

/// One request on a fresh connection (`Connection: close`, so the body ends at EOF).
/// Blocking; call it from `spawn_blocking` inside async tests.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body and close; a failed
    // write is then expected, the reply is what matters.
    let _ = stream.write_all(body);
    let mut raw = vec![];
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP reply head in {:?}", String::from_utf8_lossy(&raw)));
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_vec());
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http(addr, &method, &path, &headers, &body)
    })
    .await
    .unwrap()
}

pub const JSON: (&str, &str) = ("Content-Type", "application/json");
