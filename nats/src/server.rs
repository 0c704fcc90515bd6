//! [`NatsServer`]: a nats-server child process on a free loopback port, with JetStream in
//! a temporary store, for tests, examples and benchmarks; and [`partition_mapping`], the
//! server configuration that partitions a subject space.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long [`NatsServer::start`] waits for the server to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The server configuration lines that partition `<base>.<key>` onto
/// `<base>.<partition>.<key>` with `partitions` partitions: the server's deterministic
/// partition function (nats-server 2.8 and later) of the key token, so a key always lands
/// in the same partition. A JetStream stream capturing `<base>.*.*` then holds every
/// partition, and a consumer filtered on `<base>.<p>.*` reads one.
///
/// ```
/// let conf = shardbus_nats::partition_mapping("orders", 3);
/// assert_eq!(conf, "mappings = {\n  \"orders.*\": \"orders.{{partition(3,1)}}.{{wildcard(1)}}\"\n}\n");
/// ```
pub fn partition_mapping(base: &str, partitions: u32) -> String {
    format!(
        "mappings = {{\n  \"{base}.*\": \"{base}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}\"\n}}\n"
    )
}

/// What to start: see [`NatsServer::start_with`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The server's `max_payload` in bytes; `None`: the server's default (1 MiB).
    pub max_payload: Option<usize>,
    /// Partitioned subject spaces: `(base, partitions)`, see [`partition_mapping`].
    pub partitions: Vec<(String, u32)>,
}

impl ServerConfig {
    /// Sets the server's `max_payload`.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Adds a partitioned subject space: `<base>.<key>` onto `<base>.<p>.<key>` with
    /// `partitions` partitions ([`partition_mapping`]).
    pub fn partition(mut self, base: impl Into<String>, partitions: u32) -> Self {
        self.partitions.push((base.into(), partitions));
        self
    }

    /// The configuration file's text for a server on `port` storing under `store`.
    pub fn render(&self, port: u16, store: &Path) -> String {
        let mut conf = format!(
            "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: {:?}\n}}\n",
            store.display().to_string()
        );
        if let Some(max) = self.max_payload {
            let _ = writeln!(conf, "max_payload: {max}");
        }
        if !self.partitions.is_empty() {
            conf.push_str("mappings = {\n");
            for (base, n) in &self.partitions {
                let _ = writeln!(
                    conf,
                    "  \"{base}.*\": \"{base}.{{{{partition({n},1)}}}}.{{{{wildcard(1)}}}}\""
                );
            }
            conf.push_str("}\n");
        }
        conf
    }
}

/// A nats-server child process on `127.0.0.1` and a free port, with JetStream storing in
/// a temporary directory, for tests, examples and benchmarks. The binary is `nats-server`
/// on the `PATH`, or the path in the `NATS_SERVER` environment variable.
///
/// Dropping it kills the server by its pid (SIGKILL), reaps it and removes the directory.
/// [`kill`](Self::kill), [`restart`](Self::restart), [`pause`](Self::pause) and
/// [`resume`](Self::resume) are for fault tests; a restart keeps the port and the store.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl NatsServer {
    /// Starts a server with JetStream and the defaults, and waits (at most
    /// [`START_TIMEOUT`]) until it accepts connections. `NotFound` if there is no
    /// nats-server binary.
    pub fn start() -> io::Result<Self> {
        Self::start_with(ServerConfig::default())
    }

    /// [`start`](Self::start) with a configuration.
    pub fn start_with(config: ServerConfig) -> io::Result<Self> {
        static SERVERS: AtomicU64 = AtomicU64::new(0);
        // Relaxed: only uniqueness of the directory name matters.
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("shardbus-nats-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("store"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::write(
            dir.join("server.conf"),
            config.render(port, &dir.join("store")),
        )?;
        let mut server = NatsServer {
            child: None,
            port,
            dir,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let binary = std::env::var_os("NATS_SERVER").unwrap_or_else(|| "nats-server".into());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(self.dir.join("server.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start {}: {e}", binary.to_string_lossy()),
                )
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the server sends its `INFO` line on a new connection.
    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "nats-server exited with {status}: {}",
                        self.log_tail()
                    )));
                }
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(200),
            ) {
                stream.set_read_timeout(Some(Duration::from_millis(500)))?;
                let mut buf = [0u8; 4];
                if stream.read_exact(&mut buf).is_ok() && &buf == b"INFO" {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "nats-server did not accept connections within {START_TIMEOUT:?}: {}",
                self.log_tail()
            ),
        ))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        log.get(start..).unwrap_or_default().to_owned()
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory holding the configuration, the log and the JetStream store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server with SIGKILL and reaps it. Its store stays for a restart.
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies of SIGKILL too; `Child::kill` sends SIGKILL.
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same store (after
    /// [`kill`](Self::kill)), and waits until it accepts connections.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&self) -> io::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// Lets a paused server go on with SIGCONT.
    pub fn resume(&self) -> io::Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        let Some(pid) = self.pid() else {
            return Err(io::Error::other("nats-server is not running"));
        };
        let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
        // `kill(2)` touches no memory of this process; `pid` is our own child, not yet
        // reaped (`self.child` holds it), so the pid cannot have been reused.
        // SAFETY: by the ownership stated in the lines just above (no memory is shared).
        let rc = unsafe { libc::kill(pid, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
