//! What instances tell each other on the `<prefix>events` channel, one line of text:
//!
//! - `W <instance> <seq> <route>\n<path>`: a write; every subscriber drops the
//!   resource's cached variants, then answers with an ack;
//! - `w …`: the same, no ack wanted (a `revalidate` route: nobody answers from a cache);
//! - `r <instance> 0 <route>\n<path>`: a lease released without a write;
//! - `a <writer> <seq> <instance>\n`: an ack of the writer's write `seq`.
//!
//! Route names have no spaces or newlines (`[A-Za-z0-9_.-]+`), paths no newlines.

/// One message, borrowed from its payload.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Message<'a> {
    Written {
        instance: &'a str,
        seq: u64,
        /// Every subscriber answers with an ack once it dropped the resource.
        acked: bool,
        route: &'a str,
        path: &'a str,
    },
    Released {
        instance: &'a str,
        route: &'a str,
        path: &'a str,
    },
    Ack {
        writer: &'a str,
        seq: u64,
    },
}

impl<'a> Message<'a> {
    pub(super) fn write(instance: &str, seq: u64, acked: bool, route: &str, path: &str) -> String {
        let kind = if acked { 'W' } else { 'w' };
        format!("{kind} {instance} {seq} {route}\n{path}")
    }

    pub(super) fn release(instance: &str, route: &str, path: &str) -> String {
        format!("r {instance} 0 {route}\n{path}")
    }

    pub(super) fn ack(writer: &str, seq: u64, instance: &str) -> String {
        format!("a {writer} {seq} {instance}\n")
    }

    pub(super) fn parse(payload: &'a [u8]) -> Option<Message<'a>> {
        let text = std::str::from_utf8(payload).ok()?;
        let (head, path) = text.split_once('\n')?;
        let mut parts = head.splitn(4, ' ');
        let kind = parts.next()?;
        let instance = parts.next()?;
        let seq = parts.next()?.parse().ok()?;
        let last = parts.next()?;
        Some(match kind {
            "W" | "w" => Message::Written {
                instance,
                seq,
                acked: kind == "W",
                route: last,
                path,
            },
            "r" => Message::Released {
                instance,
                route: last,
                path,
            },
            "a" => Message::Ack {
                writer: instance,
                seq,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_ignored() {
        let write = Message::write("abc", 7, true, "people", "/people/1 2");
        assert_eq!(
            Message::parse(write.as_bytes()),
            Some(Message::Written {
                instance: "abc",
                seq: 7,
                acked: true,
                route: "people",
                path: "/people/1 2"
            })
        );
        let quiet = Message::write("abc", 8, false, "r", "/x");
        assert!(matches!(
            Message::parse(quiet.as_bytes()),
            Some(Message::Written { acked: false, .. })
        ));
        let released = Message::release("abc", "r", "/x");
        assert_eq!(
            Message::parse(released.as_bytes()),
            Some(Message::Released {
                instance: "abc",
                route: "r",
                path: "/x"
            })
        );
        let ack = Message::ack("abc", 9, "def");
        assert_eq!(
            Message::parse(ack.as_bytes()),
            Some(Message::Ack {
                writer: "abc",
                seq: 9
            })
        );
        for junk in [
            &b"x abc 1 r\n/x"[..],
            b"W abc r\n/x",
            b"W abc 1 r",
            b"",
            b"\xff\xfe",
        ] {
            assert!(Message::parse(junk).is_none(), "{junk:?}");
        }
    }
}
