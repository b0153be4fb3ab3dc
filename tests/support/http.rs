//! A tiny static file server on a loopback port, for archive URL sources.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

pub struct FileServer {
    pub address: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Serve the files of `root` (GET only) on 127.0.0.1, port chosen by the OS.
    pub fn start(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let root = root.to_path_buf();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &root),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        FileServer {
            address,
            stop,
            thread: Some(thread),
        }
    }
}

fn serve(stream: TcpStream, root: &Path) {
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    reader.read_line(&mut request).unwrap_or_default();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    let mut stream = stream;
    match std::fs::read(root.join(path)) {
        Ok(body) if !path.contains("..") => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
        _ => {
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A request's headers: lowercase name and value.
pub type Headers = Vec<(String, String)>;

/// Records the requests POSTed to it; answers each with the next status of
/// `statuses` (the last one repeats), or, for a status of 0, never.
pub struct Recorder {
    pub address: String,
    pub bodies: Arc<std::sync::Mutex<Vec<String>>>,
    /// Each request's headers (names in lowercase), in the bodies' order.
    pub headers: Arc<std::sync::Mutex<Vec<Headers>>>,
}

impl Recorder {
    pub fn start(statuses: &[u16]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let headers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sink, header_sink, statuses) = (bodies.clone(), headers.clone(), statuses.to_vec());
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let status = statuses[n.min(statuses.len() - 1)];
                let (sink, header_sink) = (sink.clone(), header_sink.clone());
                std::thread::spawn(move || {
                    let (head, body) = read_request(&stream);
                    {
                        // One lock order for both, so the two stay aligned.
                        let mut bodies = sink.lock().unwrap();
                        header_sink.lock().unwrap().push(head);
                        bodies.push(body);
                    }
                    if status == 0 {
                        // Hang: hold the connection until the test ends.
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                });
            }
        });
        Recorder {
            address,
            bodies,
            headers,
        }
    }
}

/// A request's headers and body.
fn read_request(stream: &TcpStream) -> (Headers, String) {
    use std::io::Read;
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    let mut headers = Vec::new();
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if std::mem::take(&mut first) {
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    (headers, String::from_utf8_lossy(&body).into_owned())
}
