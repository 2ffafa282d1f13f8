//! STUB
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntityTag {
    weak: bool,
    opaque: String,
}
impl EntityTag {
    pub fn strong(opaque: &str) -> Option<EntityTag> {
        Some(EntityTag {
            weak: false,
            opaque: opaque.into(),
        })
    }
    pub fn weak(opaque: &str) -> Option<EntityTag> {
        Some(EntityTag {
            weak: true,
            opaque: opaque.into(),
        })
    }
    pub fn from_body(body: &[u8]) -> EntityTag {
        EntityTag {
            weak: false,
            opaque: blake3::hash(body).to_hex()[..32].to_string(),
        }
    }
    pub fn parse(_value: &[u8]) -> Option<EntityTag> {
        None
    }
    pub fn is_weak(&self) -> bool {
        self.weak
    }
    pub fn strong_eq(&self, o: &EntityTag) -> bool {
        !self.weak && !o.weak && self.opaque == o.opaque
    }
    pub fn weak_eq(&self, o: &EntityTag) -> bool {
        self.opaque == o.opaque
    }
    pub fn to_header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_str(&self.to_string()).unwrap_or(http::HeaderValue::from_static("\"\""))
    }
}
impl std::fmt::Display for EntityTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.weak {
            write!(f, "W/\"{}\"", self.opaque)
        } else {
            write!(f, "\"{}\"", self.opaque)
        }
    }
}
