//! STUB
use bytes::Bytes;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    JsonPatch,
    MergePatch,
}
impl Format {
    pub const fn media_type(self) -> &'static str {
        match self {
            Format::JsonPatch => "application/json-patch+json",
            Format::MergePatch => "application/merge-patch+json",
        }
    }
    pub const fn config_name(self) -> &'static str {
        match self {
            Format::JsonPatch => "json-patch",
            Format::MergePatch => "merge-patch",
        }
    }
    pub fn from_content_type(_value: &[u8]) -> Option<Format> {
        None
    }
}
#[derive(Debug, Clone)]
pub struct Document(serde_json::Value);
impl Document {
    pub fn parse(body: &[u8]) -> Result<Document, PatchError> {
        serde_json::from_slice(body)
            .map(Document)
            .map_err(|e| PatchError::NotJson {
                detail: e.to_string(),
            })
    }
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.0).unwrap_or_default())
    }
}
#[derive(Debug, Clone)]
pub struct Patch;
impl Patch {
    pub fn parse(_format: Format, _body: &[u8], _max_ops: usize) -> Result<Patch, PatchError> {
        Err(PatchError::Malformed {
            detail: "stub".into(),
        })
    }
    pub fn apply(&self, doc: &Document, _max: usize) -> Result<Bytes, PatchError> {
        Ok(doc.to_bytes())
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    Malformed {
        detail: String,
    },
    TooManyOps {
        count: usize,
        max: usize,
    },
    NotJson {
        detail: String,
    },
    TestFailed {
        op_index: usize,
        path: String,
    },
    CannotApply {
        op_index: usize,
        path: String,
        detail: String,
    },
    TooLarge {
        max: usize,
    },
}
impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
