//! A DNS server on loopback UDP that answers from a table: A, AAAA, MX, TXT,
//! PTR and CNAME records (CNAME chains followed within the table), and names
//! that never get an answer, to test timeouts.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

type Table = HashMap<(String, RecordType), Vec<RData>>;

#[derive(Default)]
struct Zone {
    records: Table,
    /// Names that exist (even without records of a type asked for).
    names: HashSet<String>,
    /// Names whose questions get no answer unless the table has records of
    /// the type asked for.
    silent: HashSet<String>,
}

#[derive(Clone)]
pub struct DnsServer {
    pub address: SocketAddr,
    zone: Arc<Mutex<Zone>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A name as DNS data, its labels taken as raw bytes: test zones hold
/// underscores and worse (`foo:bar/baz.example.com`).
pub fn name(text: &str) -> Name {
    Name::from_labels(
        key(text)
            .split('.')
            .filter(|l| !l.is_empty())
            .map(str::as_bytes),
    )
    .unwrap()
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = DnsServer {
            address: socket.local_addr().unwrap(),
            zone: Arc::default(),
        };
        let zone = server.zone.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buffer) {
                let Ok(request) = Message::from_vec(&buffer[..n]) else {
                    continue;
                };
                let Some(query) = request.queries.first().cloned() else {
                    continue;
                };
                let mut response = Message::response(request.metadata.id, request.metadata.op_code);
                response.metadata.message_type = MessageType::Response;
                response.metadata.recursion_desired = request.metadata.recursion_desired;
                response.metadata.recursion_available = true;
                let answered =
                    zone.lock()
                        .unwrap()
                        .answer(query.name(), query.query_type(), &mut response);
                if !answered {
                    continue;
                }
                response.queries.push(query);
                // Loopback carries any size: no truncation, no TCP.
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        server
    }

    /// Adds a record of any type.
    pub fn add(&self, host: &str, data: RData) {
        let mut zone = self.zone.lock().unwrap();
        zone.names.insert(key(host));
        zone.records
            .entry((key(host), data.record_type()))
            .or_default()
            .push(data);
    }

    /// Makes a name exist without records.
    pub fn add_name(&self, host: &str) {
        self.zone.lock().unwrap().names.insert(key(host));
    }

    /// Questions about `host` of a type without records get no answer.
    pub fn add_silent(&self, host: &str) {
        self.zone.lock().unwrap().silent.insert(key(host));
    }

    pub fn add_mx(&self, domain: &str, preference: u16, host: &str) {
        self.add(domain, RData::MX(MX::new(preference, name(host))));
    }

    pub fn add_a(&self, host: &str, ip: Ipv4Addr) {
        self.add(host, RData::A(A(ip)));
    }

    pub fn add_aaaa(&self, host: &str, ip: Ipv6Addr) {
        self.add(host, RData::AAAA(AAAA(ip)));
    }

    /// A TXT record of one text, split into strings of at most 255 bytes.
    pub fn add_txt(&self, host: &str, text: &str) {
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(255).collect();
        self.add_txt_strings(host, &chunks);
    }

    /// A TXT record of these character-strings, as they are.
    pub fn add_txt_strings(&self, host: &str, strings: &[&[u8]]) {
        self.add(host, RData::TXT(TXT::from_bytes(strings.to_vec())));
    }

    /// A reverse-zone name (`1.0.0.127.in-addr.arpa`) pointing at a host.
    pub fn add_ptr(&self, name: &str, host: &str) {
        self.add(name, ptr(host));
    }
}

impl Zone {
    /// Fills `response`; false when the question gets no answer at all.
    fn answer(&self, asked: &Name, kind: RecordType, response: &mut Message) -> bool {
        let mut owner = asked.clone();
        // CNAME chains, as a recursive resolver follows them; loops end.
        for _ in 0..8 {
            let name = key(&owner.to_ascii());
            if let Some(datas) = self.records.get(&(name.clone(), kind)) {
                for data in datas {
                    response
                        .answers
                        .push(Record::from_rdata(owner.clone(), 60, data.clone()));
                }
                return true;
            }
            if kind != RecordType::CNAME {
                if let Some([RData::CNAME(target), ..]) = self
                    .records
                    .get(&(name.clone(), RecordType::CNAME))
                    .map(Vec::as_slice)
                {
                    response.answers.push(Record::from_rdata(
                        owner.clone(),
                        60,
                        RData::CNAME(target.clone()),
                    ));
                    owner = target.0.clone();
                    continue;
                }
            }
            if self.silent.contains(&name) {
                return false;
            }
            if !self.names.contains(&name) && response.answers.is_empty() {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            return true;
        }
        true
    }
}

pub fn ptr(target: &str) -> RData {
    RData::PTR(PTR(name(target)))
}

pub fn cname(target: &str) -> RData {
    RData::CNAME(CNAME(name(target)))
}
