//! nf_tables over netlink, for what needs no `nft`: element-only transactions and the counters.
//!
//! `nft -f -` fetches a cache of the whole table before it sends anything, and that cache grows
//! with the table; pod churn, though, only adds and deletes elements of sets and verdict maps. So a
//! transaction made only of [`Op::AddElements`], [`Op::DeleteElements`], [`Op::AddMapElements`]
//! and [`Op::DeleteMapElements`] is encoded here ([`ElementBatch`]) into the messages nft itself
//! would send, as one nf_tables batch:
//!
//! - `NFNL_MSG_BATCH_BEGIN` (resource id `NFNL_SUBSYS_NFTABLES`);
//! - per op (split so that each element list fits a netlink attribute), `NFT_MSG_NEWSETELEM` with
//!   `NLM_F_CREATE` and without `NLM_F_EXCL` (adding an existing element is a no-op, an existing
//!   verdict map key with another verdict fails with `EEXIST`) or `NFT_MSG_DELSETELEM` (a missing
//!   element fails with `ENOENT`), for family `inet`, table `nftpolicy`. Keys are
//!   `NFTA_DATA_VALUE`s: the address (4 or 16 bytes, network order) or, in a named-port set, the
//!   concatenation of address, protocol and port, each field padded to 4 bytes (`inet_proto`: one
//!   byte and three of padding; `inet_service`: two bytes, big-endian, and two of padding). A verdict
//!   map element's data is `NFTA_DATA_VERDICT` (`NFTA_VERDICT_CODE` `NFT_JUMP`,
//!   `NFTA_VERDICT_CHAIN`);
//! - `NFNL_MSG_BATCH_END`.
//!
//! The kernel applies such a batch atomically: an error in any message aborts all of it. Every
//! message asks for an acknowledgement (`NLM_F_ACK`) and [`NfTablesSocket::commit`] reads one
//! answer per message (and the error a failed commit reports on the batch's first message) before
//! it says the batch was taken.
//!
//! [`NfTablesSocket::counters`] dumps the table's named counters (`NFT_MSG_GETOBJ` of type
//! `NFT_OBJECT_COUNTER`, `NLM_F_DUMP`), which `nft -j list counters` would fetch the whole cache for.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    parse_string, parse_u32_be, parse_u64_be, DefaultNla, Emitable, NetlinkMessage, NetlinkPayload,
    Nla, NlasIterator, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::constants::NETLINK_NETFILTER;
use netlink_sys::Socket;
use policy_compiler::model::Protocol;
use policy_compiler::nft::transaction::{Op, Transaction};
use policy_compiler::nft::{CounterValue, SetElement, TABLE_NAME};

use crate::nflog::{set_option, set_read_timeout};

/// `NFNL_SUBSYS_NFTABLES`: the resource id of a batch of nf_tables messages.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFTA_OBJ_*` attributes of an object message.
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
/// `NFT_OBJECT_COUNTER`.
const NFT_OBJECT_COUNTER: u32 = 1;
/// `NFTA_COUNTER_*` attributes of a counter's data.
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// `NLM_F_DUMP_INTR`: the dump saw the ruleset change under it.
const NLM_F_DUMP_INTR: u16 = 0x10;

/// The most element bytes one message carries: a nested attribute's length is 16 bits.
const MAX_ELEMENT_BYTES: usize = 60_000;
/// How long to wait for the kernel's answer (it answers before `send` returns; this bounds a bug).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The receive buffer: large enough for any datagram of a dump.
const RECV_BUFFER: usize = 64 << 10;

/// What one element message does, for its encoding and for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    AddToSet,
    DeleteFromSet,
    AddToMap,
    DeleteFromMap,
}

impl Action {
    fn describe(self, name: &str) -> String {
        match self {
            Action::AddToSet => format!("add element to set {name}"),
            Action::DeleteFromSet => format!("delete element from set {name}"),
            Action::AddToMap => format!("add element to map {name}"),
            Action::DeleteFromMap => format!("delete element from map {name}"),
        }
    }

    fn adds(self) -> bool {
        matches!(self, Action::AddToSet | Action::AddToMap)
    }
}

/// One `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` of a batch: what it does to which set, and its
/// elements' attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ElementMessage {
    action: Action,
    set: String,
    elements: Vec<ListAttribute<SetElementAttribute>>,
}

/// An element-only transaction as an nf_tables batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementBatch {
    messages: Vec<ElementMessage>,
}

/// The key of a set element: address, or address, protocol and port, each padded to 4 bytes.
fn element_key(element: &SetElement) -> Vec<u8> {
    match element {
        SetElement::Addr(ip) => addr_bytes(*ip),
        SetElement::AddrProtoPort(ip, protocol, port) => {
            let mut key = addr_bytes(*ip);
            key.extend_from_slice(&[protocol_number(*protocol), 0, 0, 0]);
            key.extend_from_slice(&port.to_be_bytes());
            key.extend_from_slice(&[0, 0]);
            key
        }
    }
}

fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The IP protocol number (`inet_proto`).
fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn key_attribute(key: Vec<u8>) -> SetElementAttribute {
    SetElementAttribute::Key(DataAttribute::Value(key))
}

fn jump(chain: &str) -> SetElementAttribute {
    SetElementAttribute::Data(DataAttribute::Verdict(vec![
        VerdictAttribute::Code(Verdict::Jump),
        VerdictAttribute::Chain(chain.to_string()),
    ]))
}

impl ElementBatch {
    /// The batch for `transaction` when it is made only of element ops on sets and verdict maps,
    /// each with at least one element; `None` otherwise (it goes through `nft -f`).
    pub fn from_transaction(transaction: &Transaction) -> Option<ElementBatch> {
        if transaction.ops.is_empty() {
            return None;
        }
        let mut messages = Vec::new();
        for op in &transaction.ops {
            let (action, set, elements): (_, _, Vec<Vec<SetElementAttribute>>) = match op {
                Op::AddElements(set, elements) => (
                    Action::AddToSet,
                    set,
                    elements
                        .iter()
                        .map(|e| vec![key_attribute(element_key(e))])
                        .collect(),
                ),
                Op::DeleteElements(set, elements) => (
                    Action::DeleteFromSet,
                    set,
                    elements
                        .iter()
                        .map(|e| vec![key_attribute(element_key(e))])
                        .collect(),
                ),
                Op::AddMapElements(map, elements) => (
                    Action::AddToMap,
                    map,
                    elements
                        .iter()
                        .map(|(ip, chain)| vec![key_attribute(addr_bytes(*ip)), jump(chain)])
                        .collect(),
                ),
                Op::DeleteMapElements(map, keys) => (
                    Action::DeleteFromMap,
                    map,
                    keys.iter()
                        .map(|ip| vec![key_attribute(addr_bytes(*ip))])
                        .collect(),
                ),
                _ => return None,
            };
            if elements.is_empty() {
                return None;
            }
            let mut current = ElementMessage {
                action,
                set: set.clone(),
                elements: Vec::new(),
            };
            let mut bytes = 0;
            for attributes in elements {
                let element = ListAttribute::Element(attributes);
                let len = element.buffer_len();
                if bytes + len > MAX_ELEMENT_BYTES && !current.elements.is_empty() {
                    let next = ElementMessage {
                        elements: Vec::new(),
                        ..current.clone()
                    };
                    messages.push(std::mem::replace(&mut current, next));
                    bytes = 0;
                }
                bytes += len;
                current.elements.push(element);
            }
            messages.push(current);
        }
        Some(ElementBatch { messages })
    }

    /// The batch's bytes, its messages numbered from `first_seq` (`BATCH_BEGIN` has `first_seq`,
    /// `BATCH_END` the last number), and what each element message does, by sequence number.
    fn encode(&self, first_seq: u32) -> (Vec<u8>, BTreeMap<u32, String>) {
        let mut out = Vec::new();
        let mut what = BTreeMap::new();
        let mut seq = first_seq;
        emit(
            &mut out,
            control(ControlMessage::BatchBegin),
            NLM_F_REQUEST,
            seq,
        );
        for message in &self.messages {
            seq = seq.wrapping_add(1);
            let attributes = vec![
                SetElementList::Table(TABLE_NAME.to_string()),
                SetElementList::Set(message.set.clone()),
                SetElementList::Elements(message.elements.clone()),
            ];
            let body = SetElementMessage { attributes };
            let (inner, flags) = if message.action.adds() {
                (NfTablesMessage::NewSetElement(body), NLM_F_CREATE)
            } else {
                (NfTablesMessage::DeleteSetElement(body), 0)
            };
            let inner = NetfilterMessage::new(inet_header(), inner);
            emit(&mut out, inner, NLM_F_REQUEST | NLM_F_ACK | flags, seq);
            what.insert(seq, message.action.describe(&message.set));
        }
        seq = seq.wrapping_add(1);
        emit(
            &mut out,
            control(ControlMessage::BatchEnd),
            NLM_F_REQUEST,
            seq,
        );
        (out, what)
    }

    /// How many element messages the batch holds.
    pub fn messages(&self) -> usize {
        self.messages.len()
    }
}

fn inet_header() -> NetfilterHeader {
    NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0)
}

fn control(message: ControlMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        message,
    )
}

/// Appends one netlink message (its length and type filled in) to `out`.
fn emit(out: &mut Vec<u8>, payload: NetfilterMessage, flags: u16, seq: u32) {
    let mut message = NetlinkMessage::from(payload);
    message.header.flags = flags;
    message.header.sequence_number = seq;
    message.finalize();
    let start = out.len();
    out.resize(start + message.buffer_len(), 0);
    message.serialize(&mut out[start..]);
}

/// The `NFT_MSG_GETOBJ` dump request for the table's counters.
fn counters_request(seq: u32) -> Vec<u8> {
    let attributes = vec![
        DefaultNla::new(NFTA_OBJ_TABLE, nul_terminated(TABLE_NAME)),
        DefaultNla::new(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER.to_be_bytes().to_vec()),
    ];
    let mut out = Vec::new();
    emit(
        &mut out,
        NetfilterMessage::new(inet_header(), NfTablesMessage::GetObject(attributes)),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    );
    out
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Why a netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened, set up, written or read.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The network namespace could not be entered.
    #[error("cannot enter the network namespace {netns}: {source}")]
    Netns {
        /// Its name.
        netns: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the batch: nothing changed. Each failed message, with its errno.
    #[error("{0}")]
    Rejected(String),
    /// The kernel's answer is not what netlink promises.
    #[error("unexpected netlink answer: {0}")]
    Protocol(String),
}

/// A netfilter netlink socket, in the namespace it was opened in.
#[derive(Debug)]
pub struct NfTablesSocket {
    socket: Socket,
    seq: u32,
}

impl NfTablesSocket {
    /// Opens a socket in the calling thread's network namespace, or in the one named `netns`
    /// (`/run/netns/NAME`, entered from a thread of its own).
    pub fn open(netns: Option<&str>) -> Result<NfTablesSocket, NetlinkError> {
        match netns {
            None => Self::open_here(),
            Some(name) => crate::netns::run_in(&crate::netns::path(name), Self::open_here)
                .unwrap_or_else(|source| {
                    Err(NetlinkError::Netns {
                        netns: name.to_string(),
                        source,
                    })
                }),
        }
    }

    fn open_here() -> Result<NfTablesSocket, NetlinkError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        // Errors carry the failed message's header only, not its elements.
        socket.set_cap_ack(true).map_err(NetlinkError::Socket)?;
        set_read_timeout(&socket, REPLY_TIMEOUT).map_err(NetlinkError::Socket)?;
        Ok(NfTablesSocket { socket, seq: 0 })
    }

    fn next_seqs(&mut self, count: u32) -> u32 {
        let first = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(count);
        first
    }

    /// Sends `batch` and reads the kernel's answer to each of its messages: `Ok` when the kernel
    /// committed all of it, [`NetlinkError::Rejected`] (nothing changed) naming each failed message
    /// and its errno otherwise.
    pub fn commit(&mut self, batch: &ElementBatch) -> Result<(), NetlinkError> {
        let count = u32::try_from(batch.messages.len())
            .map_err(|_| NetlinkError::Protocol("too many messages for one batch".into()))?;
        let first = self.next_seqs(count.saturating_add(2));
        let last = first.wrapping_add(count).wrapping_add(1);
        let (bytes, what) = batch.encode(first);
        self.fit_send_buffer(bytes.len())?;
        self.socket.send(&bytes, 0).map_err(NetlinkError::Socket)?;
        let mut unanswered: BTreeSet<u32> = what.keys().copied().collect();
        let mut errors = Vec::new();
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut blocking = true;
        loop {
            if unanswered.is_empty() {
                // Anything else the kernel queued for this batch has arrived too (it answers
                // within `send`): read it without waiting.
                blocking = false;
            }
            let flags = if blocking { 0 } else { libc::MSG_DONTWAIT };
            let n = match self.socket.recv(&mut &mut buf[..], flags) {
                Ok(n) => n.min(buf.len()),
                Err(e) if !blocking && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(NetlinkError::Socket(e)),
            };
            for answer in answers(&buf[..n])? {
                let (seq, code) = match answer {
                    Answer::Ack { seq, code } => (seq, code),
                    Answer::Done { seq, .. } | Answer::Message { seq, .. } => {
                        if (first..=last).contains(&seq) {
                            return Err(NetlinkError::Protocol(
                                "a message other than an acknowledgement answers a batch".into(),
                            ));
                        }
                        continue;
                    }
                };
                if !(first..=last).contains(&seq) {
                    continue; // a late answer to an earlier request
                }
                unanswered.remove(&seq);
                if code == 0 {
                    continue;
                }
                let error = io::Error::from_raw_os_error(-code);
                let what = match what.get(&seq) {
                    Some(what) => what.clone(),
                    None if seq == first => "commit the batch".to_string(),
                    None => format!("message {seq}"),
                };
                errors.push(format!("{what} in table inet {TABLE_NAME}: {error}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NetlinkError::Rejected(errors.join("; ")))
        }
    }

    /// Makes the send buffer hold `len` bytes (as nft does for large batches): a netlink datagram
    /// must fit it whole.
    fn fit_send_buffer(&self, len: usize) -> Result<(), NetlinkError> {
        const DEFAULT: usize = 128 << 10;
        if len < DEFAULT {
            return Ok(());
        }
        let size = libc::c_int::try_from(len.saturating_mul(2)).unwrap_or(libc::c_int::MAX);
        set_option(&self.socket, libc::SO_SNDBUFFORCE, &size)
            .or_else(|_| set_option(&self.socket, libc::SO_SNDBUF, &size))
            .map_err(NetlinkError::Socket)
    }

    /// The named counters of `table inet nftpolicy`, by name (none when there is no table).
    pub fn counters(&mut self) -> Result<BTreeMap<String, CounterValue>, NetlinkError> {
        // A dump the ruleset changed under is inconsistent: ask again.
        for _ in 0..8 {
            if let Some(counters) = self.counters_once()? {
                return Ok(counters);
            }
        }
        Err(NetlinkError::Protocol(
            "the counters dump was interrupted by ruleset changes eight times".into(),
        ))
    }

    /// One dump of the counters; `None` when it was interrupted.
    fn counters_once(&mut self) -> Result<Option<BTreeMap<String, CounterValue>>, NetlinkError> {
        let seq = self.next_seqs(1);
        self.socket
            .send(&counters_request(seq), 0)
            .map_err(NetlinkError::Socket)?;
        let mut counters = BTreeMap::new();
        let mut interrupted = false;
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let n = self
                .socket
                .recv(&mut &mut buf[..], 0)
                .map_err(NetlinkError::Socket)?
                .min(buf.len());
            for answer in answers(&buf[..n])? {
                match answer {
                    Answer::Ack { seq: s, code } if s == seq => {
                        return Err(match code {
                            0 => NetlinkError::Protocol("an acknowledgement ends the dump".into()),
                            code => NetlinkError::Socket(io::Error::from_raw_os_error(-code)),
                        });
                    }
                    Answer::Done { seq: s, flags } if s == seq => {
                        interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        return Ok((!interrupted).then_some(counters));
                    }
                    Answer::Message {
                        seq: s,
                        flags,
                        message,
                    } if s == seq => {
                        interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        if let Some((name, value)) = counter(*message)? {
                            counters.insert(name, value);
                        }
                    }
                    // Late answers to earlier requests.
                    _ => {}
                }
            }
        }
    }
}

/// One message of an answer.
#[derive(Debug)]
enum Answer {
    /// An acknowledgement (`code` 0) or error (`-errno`) for the message numbered `seq`.
    Ack { seq: u32, code: i32 },
    /// The end of the dump numbered `seq`.
    Done { seq: u32, flags: u16 },
    /// A message of the dump numbered `seq`.
    Message {
        seq: u32,
        flags: u16,
        message: Box<NetfilterMessage>,
    },
}

/// The messages of a datagram.
fn answers(datagram: &[u8]) -> Result<Vec<Answer>, NetlinkError> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some((bytes, next)) = crate::nflog::message::split_message(rest) else {
            return Err(NetlinkError::Protocol(format!(
                "a truncated message ({} bytes left)",
                rest.len()
            )));
        };
        rest = next;
        let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
            .map_err(|e| NetlinkError::Protocol(format!("an unreadable message: {e}")))?;
        let seq = message.header.sequence_number;
        let flags = message.header.flags;
        out.push(match message.payload {
            NetlinkPayload::Error(e) => Answer::Ack {
                seq,
                code: e.code.map_or(0, |c| c.get()),
            },
            NetlinkPayload::Done(_) => Answer::Done { seq, flags },
            NetlinkPayload::InnerMessage(message) => Answer::Message {
                seq,
                flags,
                message: Box::new(message),
            },
            other => {
                return Err(NetlinkError::Protocol(format!(
                    "a message of type {}",
                    other.message_type()
                )))
            }
        });
    }
    Ok(out)
}

/// The name and value of a counter object message (`NFT_MSG_NEWOBJ` of type counter); `None` for
/// another message or object type.
fn counter(message: NetfilterMessage) -> Result<Option<(String, CounterValue)>, NetlinkError> {
    let NetfilterMessageInner::NfTables(NfTablesMessage::NewObject(attributes)) = message.inner
    else {
        return Ok(None);
    };
    let bad = |what: &str| NetlinkError::Protocol(format!("a counter object with {what}"));
    let mut name = None;
    let mut value = None;
    for nla in attributes {
        let mut value_bytes = vec![0; nla.value_len()];
        nla.emit_value(&mut value_bytes);
        let bytes = value_bytes.as_slice();
        match nla.kind() & !NLA_F_NESTED {
            NFTA_OBJ_NAME => name = Some(parse_string(bytes).map_err(|_| bad("a bad name"))?),
            NFTA_OBJ_TYPE => {
                let object_type = parse_u32_be(bytes).map_err(|_| bad("a bad type"))?;
                if object_type != NFT_OBJECT_COUNTER {
                    return Ok(None);
                }
            }
            NFTA_OBJ_DATA => {
                let mut v = CounterValue::default();
                for inner in NlasIterator::new(bytes) {
                    let inner = inner.map_err(|_| bad("bad data"))?;
                    let number = || parse_u64_be(inner.value()).map_err(|_| bad("a bad number"));
                    match inner.kind() & !NLA_F_NESTED {
                        NFTA_COUNTER_BYTES => v.bytes = number()?,
                        NFTA_COUNTER_PACKETS => v.packets = number()?,
                        _ => {}
                    }
                }
                value = Some(v);
            }
            _ => {}
        }
    }
    match (name, value) {
        (Some(name), Some(value)) => Ok(Some((name, value))),
        _ => Err(bad("no name or no data")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::nft::transaction::Op;

    fn addr(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn batch(ops: Vec<Op>) -> ElementBatch {
        ElementBatch::from_transaction(&Transaction { ops }).expect("element-only")
    }

    /// A netlink header: length, type, flags, sequence number, port 0.
    fn header(len: u32, message_type: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&message_type.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&[0; 4]);
        v
    }

    /// BATCH_BEGIN or BATCH_END: family unspec, resource id NFNL_SUBSYS_NFTABLES (big-endian).
    fn batch_control(message_type: u16, seq: u32) -> Vec<u8> {
        let mut v = header(20, message_type, 0x0001, seq);
        v.extend_from_slice(&[0, 0, 0x00, 0x0a]);
        v
    }

    /// An attribute (header, value, padding to 4 bytes).
    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).expect("short");
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    const NESTED: u16 = 0x8000;

    /// NEWSETELEM (0x0a0c) or DELSETELEM (0x0a0e) of family inet on `set` of table nftpolicy.
    fn element_message(
        message_type: u16,
        flags: u16,
        seq: u32,
        set: &str,
        elements: &[Vec<u8>],
    ) -> Vec<u8> {
        let mut body = vec![1, 0, 0, 0]; // nfgenmsg: NFPROTO_INET, version 0, res_id 0
        body.extend(attr(1, b"nftpolicy\0")); // NFTA_SET_ELEM_LIST_TABLE
        body.extend(attr(2, format!("{set}\0").as_bytes())); // NFTA_SET_ELEM_LIST_SET
        let list: Vec<u8> = elements
            .iter()
            .flat_map(|e| attr(1 | NESTED, e)) // NFTA_LIST_ELEM
            .collect();
        body.extend(attr(3 | NESTED, &list)); // NFTA_SET_ELEM_LIST_ELEMENTS
        let len = u32::try_from(16 + body.len()).expect("short");
        let mut v = header(len, message_type, flags, seq);
        v.extend(body);
        v
    }

    /// NFTA_SET_ELEM_KEY holding NFTA_DATA_VALUE `key`.
    fn key(bytes: &[u8]) -> Vec<u8> {
        attr(1 | NESTED, &attr(1, bytes))
    }

    /// NFTA_SET_ELEM_DATA holding NFTA_DATA_VERDICT: NFTA_VERDICT_CODE NFT_JUMP (-3), NFTA_VERDICT_CHAIN.
    fn jump_to(chain: &str) -> Vec<u8> {
        let mut verdict = attr(1, &(-3i32).to_be_bytes());
        verdict.extend(attr(2, format!("{chain}\0").as_bytes()));
        attr(2 | NESTED, &attr(2 | NESTED, &verdict))
    }

    const REQUEST_ACK_CREATE: u16 = 0x0001 | 0x0004 | 0x0400;
    const REQUEST_ACK: u16 = 0x0001 | 0x0004;

    #[test]
    fn an_address_added_to_a_set_is_one_newsetelem_with_create_between_begin_and_end() {
        let b = batch(vec![Op::AddElements(
            "s4".into(),
            vec![SetElement::Addr(addr("10.0.0.3"))],
        )]);
        let (bytes, what) = b.encode(7);
        let mut expected = batch_control(0x10, 7);
        expected.extend(element_message(
            0x0a0c,
            REQUEST_ACK_CREATE,
            8,
            "s4",
            &[key(&[10, 0, 0, 3])],
        ));
        expected.extend(batch_control(0x11, 9));
        assert_eq!(bytes, expected);
        assert_eq!(
            what,
            BTreeMap::from([(8, "add element to set s4".to_string())])
        );
    }

    #[test]
    fn named_port_keys_pad_each_field_to_four_bytes() {
        // As nft --debug=netlink shows `10.0.0.1 . tcp . 8080`: 0100000a 00000006 0000901f.
        assert_eq!(
            element_key(&SetElement::AddrProtoPort(
                addr("10.0.0.1"),
                Protocol::Tcp,
                8080
            )),
            [10, 0, 0, 1, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        let mut v6 = addr("fd00::1")
            .to_string()
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets()
            .to_vec();
        v6.extend_from_slice(&[17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(
            element_key(&SetElement::AddrProtoPort(
                addr("fd00::1"),
                Protocol::Udp,
                53
            )),
            v6
        );
        assert_eq!(protocol_number(Protocol::Sctp), 132);
        let b = batch(vec![Op::DeleteElements(
            "named".into(),
            vec![SetElement::AddrProtoPort(
                addr("10.0.0.1"),
                Protocol::Tcp,
                8080,
            )],
        )]);
        let (bytes, _) = b.encode(1);
        let mut expected = batch_control(0x10, 1);
        expected.extend(element_message(
            0x0a0e,
            REQUEST_ACK,
            2,
            "named",
            &[key(&[10, 0, 0, 1, 6, 0, 0, 0, 0x1f, 0x90, 0, 0])],
        ));
        expected.extend(batch_control(0x11, 3));
        assert_eq!(bytes, expected);
    }

    #[test]
    fn verdict_map_elements_jump_to_their_chain_and_deletes_carry_only_keys() {
        let b = batch(vec![
            Op::AddMapElements(
                "ingress_v6".into(),
                vec![
                    (addr("fd00::2"), "pod_a".into()),
                    (addr("fd00::3"), "pod_b".into()),
                ],
            ),
            Op::DeleteMapElements("ingress_v4".into(), vec![addr("10.0.0.9")]),
        ]);
        let (bytes, what) = b.encode(1);
        let v6 = |s: &str| {
            addr(s)
                .to_string()
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets()
        };
        let element = |ip: &str, chain: &str| {
            let mut e = key(&v6(ip));
            e.extend(jump_to(chain));
            e
        };
        let mut expected = batch_control(0x10, 1);
        expected.extend(element_message(
            0x0a0c,
            REQUEST_ACK_CREATE,
            2,
            "ingress_v6",
            &[element("fd00::2", "pod_a"), element("fd00::3", "pod_b")],
        ));
        expected.extend(element_message(
            0x0a0e,
            REQUEST_ACK,
            3,
            "ingress_v4",
            &[key(&[10, 0, 0, 9])],
        ));
        expected.extend(batch_control(0x11, 4));
        assert_eq!(bytes, expected);
        assert_eq!(
            what.get(&2).map(String::as_str),
            Some("add element to map ingress_v6")
        );
        assert_eq!(
            what.get(&3).map(String::as_str),
            Some("delete element from map ingress_v4")
        );
    }

    #[test]
    fn only_element_only_transactions_with_elements_make_a_batch() {
        let elements = || vec![SetElement::Addr(addr("10.0.0.1"))];
        let tx = |ops| Transaction { ops };
        assert!(ElementBatch::from_transaction(&tx(vec![])).is_none());
        assert!(
            ElementBatch::from_transaction(&tx(vec![Op::AddElements("s".into(), vec![])]))
                .is_none()
        );
        assert!(ElementBatch::from_transaction(&tx(vec![
            Op::AddElements("s".into(), elements()),
            Op::FlushChain("c".into()),
        ]))
        .is_none());
        assert!(
            ElementBatch::from_transaction(&tx(vec![Op::DeleteDecisionElements(
                "d".into(),
                vec![]
            )]))
            .is_none()
        );
        let b = ElementBatch::from_transaction(&tx(vec![
            Op::AddElements("s".into(), elements()),
            Op::DeleteElements("s".into(), elements()),
        ]))
        .expect("element-only");
        assert_eq!(b.messages(), 2);
    }

    #[test]
    fn large_element_lists_split_into_messages_whose_lists_fit_an_attribute() {
        let elements: Vec<(IpAddr, String)> = (0..20_000u32)
            .map(|i| {
                let ip = std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i));
                (IpAddr::V6(ip), format!("pod_chain_{i:08}"))
            })
            .collect();
        let b = batch(vec![Op::AddMapElements("m".into(), elements.clone())]);
        assert!(b.messages() > 1, "{} messages", b.messages());
        let total: usize = b.messages.iter().map(|m| m.elements.len()).sum();
        assert_eq!(total, elements.len(), "every element is sent once");
        for m in &b.messages {
            let list = SetElementList::Elements(m.elements.clone());
            assert!(
                list.buffer_len() <= usize::from(u16::MAX),
                "{}",
                list.buffer_len()
            );
            assert_eq!(m.action, Action::AddToMap);
            assert_eq!(m.set, "m");
        }
        // In order: the first message starts with the first element.
        assert_eq!(
            b.messages[0].elements[0],
            ListAttribute::Element(vec![
                key_attribute(addr_bytes(elements[0].0)),
                jump(&elements[0].1)
            ])
        );
    }

    /// An NLMSG_ERROR answering `seq` with `code` (CAP_ACK: the original header only).
    fn error_message(seq: u32, code: i32) -> Vec<u8> {
        let mut v = header(36, 2, 0x0100, seq);
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend(header(64, 0x0a0e, REQUEST_ACK, seq));
        v
    }

    #[test]
    fn answers_read_acknowledgements_errors_and_dump_messages() {
        let mut datagram = error_message(4, 0);
        datagram.extend(error_message(5, -libc::ENOENT));
        let read = answers(&datagram).expect("readable");
        assert!(
            matches!(read[..], [Answer::Ack { seq: 4, code: 0 }, Answer::Ack { seq: 5, code }] if code == -libc::ENOENT)
        );
        assert!(
            answers(&datagram[..40]).is_err(),
            "a cut message is an error"
        );
        let mut done = header(20, 3, 0x0002 | NLM_F_DUMP_INTR, 9);
        done.extend_from_slice(&0i32.to_ne_bytes());
        let read = answers(&done).expect("readable");
        assert!(
            matches!(read[..], [Answer::Done { seq: 9, flags }] if flags & NLM_F_DUMP_INTR != 0)
        );
    }

    #[test]
    fn counter_objects_read_as_name_and_value() {
        let mut data = attr(NFTA_COUNTER_BYTES, &1500u64.to_be_bytes());
        data.extend(attr(NFTA_COUNTER_PACKETS, &3u64.to_be_bytes()));
        let mut body = vec![1, 0, 0, 0];
        body.extend(attr(NFTA_OBJ_TABLE, b"nftpolicy\0"));
        body.extend(attr(NFTA_OBJ_NAME, b"np_ingress_allow\0"));
        body.extend(attr(NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes()));
        body.extend(attr(NFTA_OBJ_DATA | NESTED, &data));
        let len = u32::try_from(16 + body.len()).expect("short");
        let mut message = header(len, 0x0a12, 0x0002, 3); // NFT_MSG_NEWOBJ, NLM_F_MULTI
        message.extend(body);
        let read = answers(&message).expect("readable");
        let [Answer::Message {
            seq: 3, message, ..
        }] = &read[..]
        else {
            panic!("{read:?}");
        };
        assert_eq!(
            counter((**message).clone()).expect("a counter"),
            Some((
                "np_ingress_allow".to_string(),
                CounterValue {
                    packets: 3,
                    bytes: 1500
                }
            ))
        );
        // The request: GETOBJ (0x0a13) dump of table nftpolicy, type counter.
        let mut expected_body = vec![1, 0, 0, 0];
        expected_body.extend(attr(NFTA_OBJ_TABLE, b"nftpolicy\0"));
        expected_body.extend(attr(NFTA_OBJ_TYPE, &1u32.to_be_bytes()));
        let mut expected = header(
            u32::try_from(16 + expected_body.len()).expect("short"),
            0x0a13,
            0x0301,
            5,
        );
        expected.extend(expected_body);
        assert_eq!(counters_request(5), expected);
    }
}
