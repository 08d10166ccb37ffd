//! The milter wire protocol, version 6 (Sendmail 8.14+ libmilter, as Postfix speaks it).
//!
//! Contract: every packet is a 4-byte big-endian length (of what follows), one command byte and
//! its data. `decode_reply` turns one packet from a milter into a typed [`Response`] and never
//! panics: a hostile milter's bytes yield [`ProtocolError`], which the client treats like a
//! dead milter (the stage's `default_action`). Packets larger than [`MAX_PACKET`] are refused
//! before any allocation. `encode_*` build the MTA side's commands; body chunks are at most
//! [`MAX_BODY_CHUNK`] bytes because libmilter's default `MILTER_MDS_64K` refuses more.

use std::fmt;

use crate::smtp::reply::Reply;

/// The protocol version we offer and require (QUIT_NC, SKIP, NR_* and symbol lists).
pub const VERSION: u32 = 6;
/// Largest body chunk a milter accepts without the MDS_256K/1M extensions.
pub const MAX_BODY_CHUNK: usize = 65_535;
/// Largest packet we read from a milter: a replaced body arrives in chunks, so 1 MiB plus
/// framing bounds what one hostile reply can make us allocate.
pub const MAX_PACKET: usize = 1024 * 1024 + 16;

/// Commands from the MTA (SMFIC_*).
pub mod command {
    pub const ABORT: u8 = b'A';
    pub const BODY: u8 = b'B';
    pub const CONNECT: u8 = b'C';
    pub const MACRO: u8 = b'D';
    pub const BODYEOB: u8 = b'E';
    pub const HELO: u8 = b'H';
    pub const QUIT_NC: u8 = b'K';
    pub const HEADER: u8 = b'L';
    pub const MAIL: u8 = b'M';
    pub const EOH: u8 = b'N';
    pub const OPTNEG: u8 = b'O';
    pub const QUIT: u8 = b'Q';
    pub const RCPT: u8 = b'R';
    pub const DATA: u8 = b'T';
}

/// Actions a milter may request (SMFIF_*); we offer all of them.
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
    pub const ALL: u32 = 0x1FF;
}

/// Protocol steps a milter may skip or leave unanswered (SMFIP_*).
pub mod step {
    pub const NOCONNECT: u32 = 0x01;
    pub const NOHELO: u32 = 0x02;
    pub const NOMAIL: u32 = 0x04;
    pub const NORCPT: u32 = 0x08;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    /// Every step flag we honour. We never send UNKNOWN commands, so NOUNKNOWN/NR_UNKN are
    /// trivially honoured; RCPT_REJ and HDR_LEADSPC are not offered.
    pub const OFFERED: u32 = NOCONNECT
        | NOHELO
        | NOMAIL
        | NORCPT
        | NOBODY
        | NOHDRS
        | NOEOH
        | NR_HDR
        | NOUNKNOWN
        | NODATA
        | SKIP
        | NR_CONN
        | NR_HELO
        | NR_MAIL
        | NR_RCPT
        | NR_DATA
        | NR_UNKN
        | NR_EOH
        | NR_BODY;
}

/// The protocol stages a macro list belongs to (SMFIM_*, the index in SETSYMLIST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacroStage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    EndOfMessage,
    EndOfHeaders,
}

impl MacroStage {
    pub const ALL: [MacroStage; 7] = [
        MacroStage::Connect,
        MacroStage::Helo,
        MacroStage::Mail,
        MacroStage::Rcpt,
        MacroStage::Data,
        MacroStage::EndOfMessage,
        MacroStage::EndOfHeaders,
    ];

    fn from_index(index: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(index).ok()?).copied()
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The command whose macros these are (the first byte of SMFIC_MACRO).
    pub fn command(self) -> u8 {
        match self {
            MacroStage::Connect => command::CONNECT,
            MacroStage::Helo => command::HELO,
            MacroStage::Mail => command::MAIL,
            MacroStage::Rcpt => command::RCPT,
            MacroStage::Data => command::DATA,
            MacroStage::EndOfMessage => command::BODYEOB,
            MacroStage::EndOfHeaders => command::EOH,
        }
    }
}

/// What the milter agreed to in option negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    /// SMFIF_* actions the milter may request (within what we offered).
    pub actions: u32,
    /// SMFIP_* steps the milter skips or does not answer.
    pub steps: u32,
    /// Macro lists the milter asked for (SETSYMLIST), indexed by [`MacroStage::index`].
    pub macros: [Option<Vec<String>>; 7],
}

impl Negotiated {
    pub fn skips(&self, flag: u32) -> bool {
        self.steps & flag != 0
    }

    pub fn may(&self, action_flag: u32) -> bool {
        self.actions & action_flag != 0
    }
}

/// One reply packet from a milter, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Continue,
    Accept,
    Reject,
    Tempfail,
    Discard,
    /// SMFIR_REPLYCODE: a 4xx/5xx reply with the milter's text (possibly multi-line).
    ReplyCode(Reply),
    /// SMFIR_SKIP: no more body chunks, go to end of message.
    Skip,
    /// SMFIR_PROGRESS: still working, restart the command timeout.
    Progress,
    Quarantine(String),
    AddHeader {
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    AddRecipient {
        address: String,
        args: Option<String>,
    },
    DeleteRecipient(String),
    ChangeSender {
        address: String,
        args: Option<String>,
    },
    ReplaceBody(Vec<u8>),
    /// SMFIR_SHUTDOWN / SMFIR_CONN_FAIL: the milter gives up this connection.
    Shutdown,
    /// The answer to our SMFIC_OPTNEG.
    Options(Negotiated),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("packet of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("empty packet (no command byte)")]
    Empty,
    #[error("unknown reply {0:?}")]
    UnknownReply(char),
    #[error("reply {command:?} is malformed: {problem}")]
    Malformed {
        command: char,
        problem: &'static str,
    },
    #[error("milter speaks protocol version {0}, version {VERSION} is required")]
    Version(u32),
    #[error("reply code {0:?} is not a 4xx or 5xx reply")]
    BadReplyCode(String),
}

fn malformed(command: u8, problem: &'static str) -> ProtocolError {
    ProtocolError::Malformed {
        command: command as char,
        problem,
    }
}

/// Checks the 4-byte length prefix; returns the number of bytes that follow it.
pub fn packet_length(prefix: [u8; 4]) -> Result<usize, ProtocolError> {
    let length = u32::from_be_bytes(prefix) as usize;
    if length == 0 {
        return Err(ProtocolError::Empty);
    }
    if length > MAX_PACKET {
        return Err(ProtocolError::TooLarge(length));
    }
    Ok(length)
}

/// Decodes one packet's body (command byte and data, without the length prefix).
pub fn decode_reply(packet: &[u8]) -> Result<Response, ProtocolError> {
    let (&command, data) = packet.split_first().ok_or(ProtocolError::Empty)?;
    let none = |response| {
        if data.is_empty() {
            Ok(response)
        } else {
            Err(malformed(command, "unexpected data"))
        }
    };
    match command {
        b'c' => none(Response::Continue),
        b'a' => none(Response::Accept),
        b'r' => none(Response::Reject),
        b't' => none(Response::Tempfail),
        b'd' => none(Response::Discard),
        b's' => none(Response::Skip),
        b'p' => none(Response::Progress),
        b'4' | b'f' => Ok(Response::Shutdown),
        b'y' => decode_reply_code(command, data).map(Response::ReplyCode),
        b'q' => Ok(Response::Quarantine(text(
            command,
            one_string(command, data)?,
        )?)),
        b'h' => {
            let (name, value) = two_strings(command, data)?;
            Ok(Response::AddHeader { name, value })
        }
        b'i' | b'm' => decode_indexed_header(command, data),
        b'+' => Ok(Response::AddRecipient {
            address: text(command, one_string(command, data)?)?,
            args: None,
        }),
        b'2' => decode_address_with_args(command, data)
            .map(|(address, args)| Response::AddRecipient { address, args }),
        b'-' => Ok(Response::DeleteRecipient(text(
            command,
            one_string(command, data)?,
        )?)),
        b'e' => decode_address_with_args(command, data)
            .map(|(address, args)| Response::ChangeSender { address, args }),
        b'b' => Ok(Response::ReplaceBody(data.to_vec())),
        b'O' => decode_options(data).map(Response::Options),
        other => Err(ProtocolError::UnknownReply(other as char)),
    }
}

/// The NUL-terminated strings of `data`; the last one must be terminated.
fn strings(command: u8, data: &[u8]) -> Result<Vec<&[u8]>, ProtocolError> {
    match data.split_last() {
        Some((0, rest)) => Ok(rest.split(|&b| b == 0).collect()),
        _ => Err(malformed(command, "string not NUL-terminated")),
    }
}

fn one_string(command: u8, data: &[u8]) -> Result<&[u8], ProtocolError> {
    match strings(command, data)?.as_slice() {
        [only] => Ok(only),
        _ => Err(malformed(command, "expected one string")),
    }
}

fn two_strings(command: u8, data: &[u8]) -> Result<(String, String), ProtocolError> {
    match strings(command, data)?.as_slice() {
        [first, second] => Ok((text(command, first)?, text(command, second)?)),
        _ => Err(malformed(command, "expected two strings")),
    }
}

fn text(command: u8, bytes: &[u8]) -> Result<String, ProtocolError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed(command, "not UTF-8"))
}

fn decode_indexed_header(command: u8, data: &[u8]) -> Result<Response, ProtocolError> {
    let (index, rest) = split_u32(data).ok_or_else(|| malformed(command, "missing index"))?;
    let (name, value) = two_strings(command, rest)?;
    if name.is_empty() {
        return Err(malformed(command, "empty header name"));
    }
    Ok(if command == b'i' {
        Response::InsertHeader { index, name, value }
    } else {
        Response::ChangeHeader { index, name, value }
    })
}

fn decode_address_with_args(
    command: u8,
    data: &[u8],
) -> Result<(String, Option<String>), ProtocolError> {
    let parts = strings(command, data)?;
    match parts.as_slice() {
        [address] => Ok((text(command, address)?, None)),
        [address, args] => {
            let args = text(command, args)?;
            Ok((text(command, address)?, (!args.is_empty()).then_some(args)))
        }
        _ => Err(malformed(
            command,
            "expected an address and optional arguments",
        )),
    }
}

fn split_u32(data: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = data.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

fn decode_options(data: &[u8]) -> Result<Negotiated, ProtocolError> {
    let missing = || malformed(command::OPTNEG, "shorter than 12 bytes");
    let (version, rest) = split_u32(data).ok_or_else(missing)?;
    let (actions, rest) = split_u32(rest).ok_or_else(missing)?;
    let (steps, mut rest) = split_u32(rest).ok_or_else(missing)?;
    if version < VERSION {
        return Err(ProtocolError::Version(version));
    }
    let mut macros: [Option<Vec<String>>; 7] = Default::default();
    while !rest.is_empty() {
        let (index, tail) = split_u32(rest).ok_or_else(missing)?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(command::OPTNEG, "macro list not NUL-terminated"))?;
        let stage = MacroStage::from_index(index)
            .ok_or_else(|| malformed(command::OPTNEG, "unknown macro stage"))?;
        let names = text(command::OPTNEG, &tail[..end])?;
        macros[stage.index()] = Some(names.split_whitespace().map(str::to_string).collect());
        rest = &tail[end + 1..];
    }
    Ok(Negotiated {
        version,
        actions: actions & action::ALL,
        steps: steps & step::OFFERED,
        macros,
    })
}

/// Parses SMFIR_REPLYCODE: `550 5.7.1 text` or `550-5.7.1 a\r\n550 5.7.1 b`, NUL-terminated.
/// Our [`Reply`] keeps lines without the code; a missing enhanced code gets the class default.
fn decode_reply_code(command: u8, data: &[u8]) -> Result<Reply, ProtocolError> {
    let whole = text(command, one_string(command, data)?)?;
    let bad = || ProtocolError::BadReplyCode(whole.chars().take(80).collect());
    let code_text = whole.get(..3).ok_or_else(bad)?;
    let code: u16 = code_text.parse().map_err(|_| bad())?;
    if !(400..600).contains(&code) || !code_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut lines = Vec::new();
    for line in whole.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let rest = line
            .strip_prefix(code_text)
            .and_then(|r| r.strip_prefix([' ', '-']).or((r.is_empty()).then_some(r)))
            .ok_or_else(bad)?;
        lines.push(with_enhanced_code(code, rest));
    }
    Ok(Reply::owned(code, lines.join("\n")))
}

fn with_enhanced_code(code: u16, text: &str) -> String {
    let class = text.as_bytes().first().copied();
    let has_enhanced = matches!(class, Some(b'4' | b'5'))
        && text.split(' ').next().is_some_and(|word| {
            word.split('.').count() == 3 && word.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        });
    if has_enhanced {
        text.to_string()
    } else {
        let default = if code < 500 { "4.7.1" } else { "5.7.1" };
        format!("{default} {text}").trim_end().to_string()
    }
}

/// Frames one command: length, command byte, data.
pub fn encode(command: u8, data: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(data.len() + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.push(command);
    out.extend_from_slice(data);
}

/// SMFIC_OPTNEG offering version 6, every action and every step flag we honour.
pub fn encode_options(out: &mut Vec<u8>) {
    let mut data = Vec::with_capacity(12);
    data.extend_from_slice(&VERSION.to_be_bytes());
    data.extend_from_slice(&action::ALL.to_be_bytes());
    data.extend_from_slice(&step::OFFERED.to_be_bytes());
    encode(command::OPTNEG, &data, out);
}

/// NUL-terminated strings, concatenated (the argument form of most commands).
pub fn encode_strings<'a>(
    command: u8,
    parts: impl IntoIterator<Item = &'a str>,
    out: &mut Vec<u8>,
) {
    let mut data = Vec::new();
    for part in parts {
        push_c_string(&mut data, part);
    }
    encode(command, &data, out);
}

/// SMFIC_MACRO for `stage`; nothing when no macro has a value.
pub fn encode_macros<'a>(
    stage: MacroStage,
    values: impl IntoIterator<Item = (&'a str, &'a str)>,
    out: &mut Vec<u8>,
) {
    let mut data = vec![stage.command()];
    for (name, value) in values {
        push_c_string(&mut data, name);
        push_c_string(&mut data, value);
    }
    if data.len() > 1 {
        encode(command::MACRO, &data, out);
    }
}

/// The client's address as SMFIC_CONNECT carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFamily {
    /// No address known (`U`): e.g. mail submitted locally.
    Unknown,
    Inet(std::net::SocketAddr),
}

pub fn encode_connect(hostname: &str, family: &ConnectFamily, out: &mut Vec<u8>) {
    let mut data = Vec::new();
    push_c_string(&mut data, hostname);
    match family {
        ConnectFamily::Unknown => data.push(b'U'),
        ConnectFamily::Inet(address) => {
            data.push(if address.is_ipv4() { b'4' } else { b'6' });
            data.extend_from_slice(&address.port().to_be_bytes());
            push_c_string(&mut data, &address.ip().to_string());
        }
    }
    encode(command::CONNECT, &data, out);
}

fn push_c_string(out: &mut Vec<u8>, text: &str) {
    // A NUL inside a value would split it on the milter's side; it cannot come from SMTP.
    out.extend(text.bytes().filter(|&b| b != 0));
    out.push(0);
}

impl fmt::Display for MacroStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MacroStage::Connect => "connect",
            MacroStage::Helo => "helo",
            MacroStage::Mail => "mail",
            MacroStage::Rcpt => "rcpt",
            MacroStage::Data => "data",
            MacroStage::EndOfMessage => "end_of_data",
            MacroStage::EndOfHeaders => "end_of_header",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn packet(command: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![command];
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn simple_replies_decode() {
        assert_eq!(decode_reply(b"c"), Ok(Response::Continue));
        assert_eq!(decode_reply(b"a"), Ok(Response::Accept));
        assert_eq!(decode_reply(b"p"), Ok(Response::Progress));
        assert!(decode_reply(b"cx").is_err());
        assert!(decode_reply(b"").is_err());
        assert_eq!(decode_reply(b"Z"), Err(ProtocolError::UnknownReply('Z')));
    }

    #[test]
    fn multi_line_reply_code_keeps_each_line() {
        let reply = decode_reply(&packet(b'y', b"550-5.7.1 first\r\n550 5.7.1 second\0")).unwrap();
        assert_eq!(
            reply,
            Response::ReplyCode(Reply::owned(550, "5.7.1 first\n5.7.1 second".into()))
        );
        let bare = decode_reply(&packet(b'y', b"451 try later\0")).unwrap();
        assert_eq!(
            bare,
            Response::ReplyCode(Reply::owned(451, "4.7.1 try later".into()))
        );
        assert!(decode_reply(&packet(b'y', b"250 ok\0")).is_err());
        assert!(decode_reply(&packet(b'y', b"55\0")).is_err());
        assert!(decode_reply(&packet(b'y', b"550 a\r\n451 b\0")).is_err());
    }

    #[test]
    fn header_and_recipient_changes_decode() {
        let mut data = 2u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"X-Spam\0yes\0");
        assert_eq!(
            decode_reply(&packet(b'm', &data)).unwrap(),
            Response::ChangeHeader {
                index: 2,
                name: "X-Spam".into(),
                value: "yes".into()
            }
        );
        assert_eq!(
            decode_reply(&packet(b'2', b"<a@b>\0NOTIFY=NEVER\0")).unwrap(),
            Response::AddRecipient {
                address: "<a@b>".into(),
                args: Some("NOTIFY=NEVER".into())
            }
        );
        assert_eq!(
            decode_reply(&packet(b'e', b"<s@b>\0")).unwrap(),
            Response::ChangeSender {
                address: "<s@b>".into(),
                args: None
            }
        );
        assert!(decode_reply(&packet(b'h', b"only-name\0")).is_err());
        assert!(decode_reply(&packet(b'i', b"\0\0")).is_err());
    }

    #[test]
    fn options_carry_symbol_lists() {
        let mut data = Vec::new();
        for n in [6u32, 0x1FF, 0x342 | 0x8000_0000] {
            data.extend_from_slice(&n.to_be_bytes());
        }
        data.extend_from_slice(&2u32.to_be_bytes());
        data.extend_from_slice(b"{mail_addr} i\0");
        let Response::Options(options) = decode_reply(&packet(b'O', &data)).unwrap() else {
            panic!("not options")
        };
        assert_eq!(options.steps, 0x342, "unknown bits are dropped");
        assert!(options.skips(step::NOHELO));
        assert_eq!(
            options.macros[MacroStage::Mail.index()],
            Some(vec!["{mail_addr}".to_string(), "i".to_string()])
        );
        let mut old = 2u32.to_be_bytes().to_vec();
        old.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode_reply(&packet(b'O', &old)),
            Err(ProtocolError::Version(2))
        );
    }

    #[test]
    fn length_prefix_is_bounded() {
        assert!(packet_length(0u32.to_be_bytes()).is_err());
        assert!(packet_length(u32::MAX.to_be_bytes()).is_err());
        assert_eq!(packet_length(5u32.to_be_bytes()), Ok(5));
    }

    #[test]
    fn connect_encodes_family_port_and_address() {
        let mut out = Vec::new();
        let address = "192.0.2.7:2525".parse().unwrap();
        encode_connect("mx.example", &ConnectFamily::Inet(address), &mut out);
        let mut expected = 25u32.to_be_bytes().to_vec();
        expected.extend_from_slice(b"Cmx.example\x004\x09\xdd192.0.2.7\0");
        assert_eq!(out, expected);
    }
}
