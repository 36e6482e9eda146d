//! A TCP load balancer in front of several gateways, as a Kubernetes Service
//! is: each new connection goes to the next backend in its current list (a
//! backend that refuses is skipped); taking a backend out of the list
//! leaves its open connections alone. It copies bytes both ways and adds
//! nothing, and stops with the test's runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

/// The balancer's address and its backend list.
pub struct Balancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Balancer {
    /// Starts a balancer on a free loopback port over `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let list = Arc::new(Mutex::new(backends));
        let next = Arc::new(AtomicUsize::new(0));
        let shared = list.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let list = shared.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    let candidates = list.lock().unwrap().clone();
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..candidates.len() {
                        let backend = candidates[(first + i) % candidates.len()];
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer {
            addr,
            backends: list,
        }
    }

    /// Replaces the backend list (new connections only).
    pub fn set(&self, backends: Vec<SocketAddr>) {
        *self.backends.lock().unwrap() = backends;
    }

    /// `http://` base URL of the balancer.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
