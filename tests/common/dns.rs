//! A DNS server on loopback UDP that answers from a table, for MX and A
//! lookups in tests.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

type Table = HashMap<(String, RecordType), Vec<RData>>;

#[derive(Clone)]
pub struct DnsServer {
    pub address: SocketAddr,
    records: Arc<Mutex<Table>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = DnsServer {
            address: socket.local_addr().unwrap(),
            records: Arc::default(),
        };
        let records = server.records.clone();
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
                let name = key(&query.name().to_ascii());
                let table = records.lock().unwrap();
                let known = table.keys().any(|(n, _)| *n == name);
                match table.get(&(name, query.query_type())) {
                    Some(datas) => {
                        for data in datas {
                            response.answers.push(Record::from_rdata(
                                query.name().clone(),
                                60,
                                data.clone(),
                            ));
                        }
                    }
                    None if !known => response.metadata.response_code = ResponseCode::NXDomain,
                    None => {}
                }
                response.queries.push(query);
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        server
    }

    pub fn add_mx(&self, domain: &str, preference: u16, host: &str) {
        let exchange = Name::from_str(&format!("{}.", key(host))).unwrap();
        self.records
            .lock()
            .unwrap()
            .entry((key(domain), RecordType::MX))
            .or_default()
            .push(RData::MX(MX::new(preference, exchange)));
    }

    pub fn add_a(&self, host: &str, ip: Ipv4Addr) {
        self.records
            .lock()
            .unwrap()
            .entry((key(host), RecordType::A))
            .or_default()
            .push(RData::A(A(ip)));
    }

    /// A reverse-zone name (`1.0.0.127.in-addr.arpa`) pointing at a host.
    pub fn add_ptr(&self, name: &str, host: &str) {
        let target = Name::from_str(&format!("{}.", key(host))).unwrap();
        self.records
            .lock()
            .unwrap()
            .entry((key(name), RecordType::PTR))
            .or_default()
            .push(RData::PTR(PTR(target)));
    }
}
