//! STUB
pub struct Locks;
pub struct WriteGuard;
impl Locks {
    pub fn new() -> Locks {
        Locks
    }
    pub async fn lock(&self, _route: u32, _path: &str) -> WriteGuard {
        WriteGuard
    }
}
impl Default for Locks {
    fn default() -> Self {
        Locks
    }
}
