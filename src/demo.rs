//! STUB
pub async fn run(_listen: std::net::SocketAddr) -> anyhow::Result<()> {
    anyhow::bail!("demo: stub")
}
