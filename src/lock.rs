//! STUB
pub struct Locks;
impl Locks {
    pub fn new() -> Locks {
        Locks
    }
}
impl Default for Locks {
    fn default() -> Self {
        Locks
    }
}
