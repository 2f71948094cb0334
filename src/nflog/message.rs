//! The netlink messages of an NFLOG socket: one datagram holds one or more messages (the kernel
//! batches them, ending a batch with `NLMSG_DONE`); each packet message becomes a
//! [`LoggedPacket`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, Nla};
use netlink_packet_netfilter::nflog::{PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

/// The fixed netlink header: length (u32), type, flags, sequence, port.
const NLMSG_HDRLEN: usize = 16;

/// What NFLOG says about one packet the ruleset logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggedPacket {
    /// The log statement's prefix (`log prefix "..."`), if it has one.
    pub prefix: Option<String>,
    /// The hardware protocol (`ETH_P_IP`, `ETH_P_IPV6`), from the packet header attribute.
    pub hw_protocol: Option<u16>,
    /// The netfilter hook the packet was logged at (`NF_INET_FORWARD` is 2).
    pub hook: Option<u8>,
    /// When the packet was received, if the kernel stamped it (often not on the forward path).
    pub timestamp: Option<SystemTime>,
    /// The instance's sequence number of this message, when the group has sequence numbers on.
    pub seq: Option<u32>,
    /// The first bytes of the packet, from its IP header on.
    pub payload: Vec<u8>,
}

/// A netlink message that cannot be read: the rest of its datagram is not read either, since the
/// next message's place comes from this one's length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable netlink message: {0}")]
pub struct MessageError(pub String);

/// The messages of one datagram, in order: each packet message as a [`LoggedPacket`], each
/// unreadable one as a [`MessageError`] (after which the iteration ends). Acknowledgements,
/// `NLMSG_DONE` and messages of other kinds are skipped.
pub fn packets(datagram: &[u8]) -> Packets<'_> {
    Packets { rest: datagram }
}

/// The iterator of [`packets`].
#[derive(Debug)]
pub struct Packets<'a> {
    rest: &'a [u8],
}

impl Iterator for Packets<'_> {
    type Item = Result<LoggedPacket, MessageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let Some((message, rest)) = split_message(self.rest) else {
                let len = self.rest.len();
                self.rest = &[];
                return Some(Err(MessageError(format!(
                    "{len} bytes left, not a whole netlink message"
                ))));
            };
            self.rest = rest;
            match NetlinkMessage::<NetfilterMessage>::deserialize(message) {
                Ok(message) => {
                    if let Some(packet) = logged_packet(message) {
                        return Some(Ok(packet));
                    }
                }
                Err(e) => {
                    self.rest = &[];
                    return Some(Err(MessageError(e.to_string())));
                }
            }
        }
    }
}

/// The first message of `buf` (by its header's length) and what follows it (from the next 4-byte
/// boundary), or `None` when the length is impossible.
pub(crate) fn split_message(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_ne_bytes(len)).ok()?;
    if len < NLMSG_HDRLEN || len > buf.len() {
        return None;
    }
    let aligned = len.checked_add(3)? & !3;
    Some((&buf[..len], buf.get(aligned..).unwrap_or_default()))
}

/// The packet an NFLOG packet message describes; `None` for any other message.
fn logged_packet(message: NetlinkMessage<NetfilterMessage>) -> Option<LoggedPacket> {
    let NetlinkPayload::InnerMessage(NetfilterMessage {
        inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
        ..
    }) = message.payload
    else {
        return None;
    };
    let mut packet = LoggedPacket::default();
    for nla in nlas {
        match nla {
            PacketNla::Prefix(prefix) => {
                packet.prefix = Some(prefix.to_string_lossy().into_owned());
            }
            PacketNla::Payload(payload) => packet.payload = payload,
            PacketNla::PacketHdr(header) => {
                // The crate keeps the fields private: read them back from the attribute's bytes
                // (`hw_protocol` big-endian, `hook`, padding).
                let mut raw = [0u8; 4];
                if header.value_len() == raw.len() {
                    header.emit_value(&mut raw);
                    packet.hw_protocol = Some(u16::from_be_bytes([raw[0], raw[1]]));
                    packet.hook = Some(raw[2]);
                }
            }
            PacketNla::Timestamp(timestamp) => {
                // Likewise: seconds and microseconds, both big-endian u64.
                let mut raw = [0u8; 16];
                if timestamp.value_len() == raw.len() {
                    timestamp.emit_value(&mut raw);
                    let mut sec = [0u8; 8];
                    let mut usec = [0u8; 8];
                    sec.copy_from_slice(&raw[..8]);
                    usec.copy_from_slice(&raw[8..]);
                    packet.timestamp = Duration::from_secs(u64::from_be_bytes(sec))
                        .checked_add(Duration::from_micros(u64::from_be_bytes(usec) % 1_000_000))
                        .and_then(|since| UNIX_EPOCH.checked_add(since));
                }
            }
            PacketNla::Seq(seq) => packet.seq = Some(seq),
            _ => {}
        }
    }
    Some(packet)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_netfilter::nflog::{PacketHdr, TimeStamp};
    use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily};
    use std::ffi::CString;

    /// An NFLOG packet message as the kernel sends it, serialized.
    pub(crate) fn packet_message(
        prefix: Option<&str>,
        hw_protocol: u16,
        timestamp: Option<(u64, u64)>,
        seq: Option<u32>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut hdr = [0u8; 4];
        hdr[..2].copy_from_slice(&hw_protocol.to_be_bytes());
        hdr[2] = 2; // NF_INET_FORWARD
        let mut nlas = vec![PacketNla::PacketHdr(PacketHdr::parse(&hdr).unwrap())];
        if let Some(prefix) = prefix {
            nlas.push(PacketNla::Prefix(CString::new(prefix).unwrap()));
        }
        if let Some((sec, usec)) = timestamp {
            let mut raw = sec.to_be_bytes().to_vec();
            raw.extend(usec.to_be_bytes());
            nlas.push(PacketNla::Timestamp(TimeStamp::parse(&raw).unwrap()));
        }
        if let Some(seq) = seq {
            nlas.push(PacketNla::Seq(seq));
        }
        nlas.push(PacketNla::Payload(payload.to_vec()));
        serialize(ULogMessage::Packet(nlas))
    }

    fn serialize(inner: ULogMessage) -> Vec<u8> {
        let mut message = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 100),
                inner,
            )),
        );
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    /// `NLMSG_DONE`, which ends a batch.
    pub(crate) fn done_message() -> Vec<u8> {
        let mut message = NetlinkMessage::<NetfilterMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Done(Default::default()),
        );
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    /// Messages one after the other, each from a 4-byte boundary, as in a datagram.
    pub(crate) fn datagram(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.extend(m);
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
        out
    }

    #[test]
    fn a_batch_gives_each_packet_with_its_attributes_and_skips_done() {
        let first = packet_message(
            Some("egress_Habc"),
            0x0800,
            Some((1_700_000_000, 250_000)),
            Some(7),
            &[0x45, 1, 2],
        );
        // A prefix whose length leaves the message unaligned, to check the 4-byte step.
        let second = packet_message(Some("ingress_H1"), 0x86dd, None, None, &[0x60, 9]);
        let datagram = datagram(&[first, second, done_message()]);
        let got: Vec<_> = packets(&datagram).collect();
        assert_eq!(
            got,
            vec![
                Ok(LoggedPacket {
                    prefix: Some("egress_Habc".into()),
                    hw_protocol: Some(0x0800),
                    hook: Some(2),
                    timestamp: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)),
                    seq: Some(7),
                    payload: vec![0x45, 1, 2],
                }),
                Ok(LoggedPacket {
                    prefix: Some("ingress_H1".into()),
                    hw_protocol: Some(0x86dd),
                    hook: Some(2),
                    timestamp: None,
                    seq: None,
                    payload: vec![0x60, 9],
                }),
            ]
        );
    }

    #[test]
    fn a_cut_message_is_an_error_after_the_whole_ones() {
        let whole = packet_message(Some("p"), 0x0800, None, None, &[0x45]);
        let mut datagram = datagram(&[whole.clone(), whole.clone()]);
        datagram.truncate(datagram.len() - 3);
        let got: Vec<_> = packets(&datagram).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].is_ok());
        assert!(got[1].is_err(), "{got:?}");
    }

    #[test]
    fn impossible_lengths_end_the_datagram_with_an_error() {
        // Length below the header, zero (which would loop forever if followed), beyond the buffer.
        for len in [0u32, 8, 15, 1000] {
            let mut datagram = len.to_ne_bytes().to_vec();
            datagram.resize(64, 0);
            let got: Vec<_> = packets(&datagram).collect();
            assert_eq!(got.len(), 1, "length {len}: {got:?}");
            assert!(got[0].is_err(), "length {len}: {got:?}");
        }
        assert_eq!(packets(&[]).count(), 0);
        assert!(matches!(
            packets(&[1, 2]).collect::<Vec<_>>().as_slice(),
            [Err(_)]
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // Every prefix of a real batch, and real messages with bytes flipped: each is read to its
        // end without a panic (what each gives is checked above for the meaningful cases).
        let real = datagram(&[
            packet_message(
                Some("egress_Habc"),
                0x0800,
                Some((5, 6)),
                Some(1),
                &[0x45; 40],
            ),
            done_message(),
        ]);
        for cut in 0..=real.len() {
            let _ = packets(&real[..cut]).count();
        }
        // A time past what the clock holds reads as no time.
        let far = packet_message(Some("p"), 0x0800, Some((u64::MAX, u64::MAX)), None, &[0x45]);
        assert_eq!(
            packets(&far)
                .map(|p| p.map(|p| p.timestamp))
                .collect::<Vec<_>>(),
            vec![Ok(None)]
        );
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            let mut m = real.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % m.len();
                m[at] = (state >> 32) as u8;
            }
            let _ = packets(&m).count();
        }
    }
}
