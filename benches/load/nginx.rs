//! nginx `proxy_pass` in front of the bench's upstream, as the shared kit's
//! `nginx-proxy.conf.in` configures it (one worker, keep-alive pool, no access log), when
//! `/usr/sbin/nginx` (or `PATCHGATE_BENCH_NGINX`) is there.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// `None` (and why, on stdout) when nginx is missing or does not start.
    pub fn start(upstream: SocketAddr) -> Option<Nginx> {
        let bin = std::env::var("PATCHGATE_BENCH_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
        if bin.is_empty() || !std::path::Path::new(&bin).exists() {
            println!("nginx: {bin:?} not found, no nginx proxy_pass rows");
            return None;
        }
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").ok()?;
            probe.local_addr().ok()?.port()
        };
        let dir = std::env::temp_dir().join(format!("patchgate-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let d = dir.display();
        let conf = format!(
            r#"
worker_processes 1;
master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_max_body_size 16m;
    client_body_buffer_size 512k;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream legacy {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://legacy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 32 16k;
            proxy_busy_buffers_size 64k;
        }}
    }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).ok()?;
        let child = Command::new(&bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let nginx = Nginx { addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                println!("nginx did not start: see {}/error.log", nginx.dir.display());
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Only the process this bench started, by its id.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
