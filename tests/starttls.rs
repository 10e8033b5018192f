//! STARTTLS (RFC 3207) with a self-signed certificate made by the test: a
//! real TLS client (lettre, and rustls directly) upgrades the session and
//! sends mail; the trace header records the TLS session; commands pipelined
//! behind STARTTLS in clear text are never executed.

mod common;

use common::{after_verdict, as_sent, queue_id, temp_dir, tls_config, Node, Setup, Sink};
use lettre::address::Envelope;
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::{ClientId, Extension};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn tls_node(sink: &Sink) -> (Node, std::path::PathBuf) {
    let certs = temp_dir("cert");
    let mut setup = Setup::routed_to(sink.address);
    setup.smtp_extra = tls_config(&certs);
    (Node::start(setup), certs)
}

#[test]
fn lettre_upgrades_with_starttls_and_the_trace_records_tls() {
    let sink = Sink::start();
    let (node, _certs) = tls_node(&sink);
    let hello = ClientId::Domain("client.test".into());
    let mut smtp =
        SmtpConnection::connect(node.smtp, Some(Duration::from_secs(20)), &hello, None, None)
            .expect("connects and says EHLO");
    assert!(smtp.server_info().supports_feature(Extension::StartTls));
    assert!(smtp.can_starttls());
    let tls = TlsParameters::builder("mx.antemx.test".into())
        .dangerous_accept_invalid_certs(true)
        .dangerous_accept_invalid_hostnames(true)
        .build_rustls()
        .unwrap();
    smtp.starttls(&tls, &hello).expect("STARTTLS handshake");
    assert!(smtp.is_encrypted());
    // Inside TLS, STARTTLS is no longer offered.
    assert!(!smtp.server_info().supports_feature(Extension::StartTls));
    assert!(smtp.server_info().supports_feature(Extension::EightBitMime));

    let envelope = Envelope::new(
        Some("alice@sender.test".parse().unwrap()),
        vec!["bob@example.com".parse().unwrap()],
    )
    .unwrap();
    let message = b"Subject: secret\r\n\r\nover TLS\r\n";
    let response = smtp.send(&envelope, message).expect("accepted over TLS");
    assert_eq!(response.code().to_string(), "250");
    let id = response
        .first_line()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_string();
    smtp.quit().unwrap();

    let messages = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(messages.len(), 1);
    let text = String::from_utf8_lossy(after_verdict(&messages[0].data)).into_owned();
    assert!(
        text.starts_with(&format!(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.antemx.test (antemx) with ESMTPS id {id}\r\n\t(version=TLSv1.3 cipher=TLS13_"
        )),
        "{text}"
    );
    assert!(text.contains("\tfor <bob@example.com>; "), "{text}");
    // lettre ends the message with CRLF.CRLF after the body's own CRLF.
    assert!(as_sent(&messages[0].data).starts_with(message), "{text}");
}

/// Accepts exactly the certificate the node was configured with.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the configured certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn client_config(
    certs: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = CertificateDer::from_pem_file(certs.join("cert.pem")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { cert, provider }))
        .with_no_client_auth();
    Arc::new(config)
}

/// Reads one SMTP reply from any line source: (code, lines joined by \n).
fn read_reply(reader: &mut impl BufRead) -> (u16, String) {
    let mut text = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return (0, text.join("\n"));
        }
        let line = line.trim_end();
        let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        text.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return (code, text.join("\n"));
        }
    }
}

type Tls = BufReader<StreamOwned<ClientConnection, TcpStream>>;

/// Connects, says EHLO, sends `starttls_write` (which starts with STARTTLS)
/// in one write, expects 220 and completes the handshake.
fn upgraded(
    node: &Node,
    certs: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    starttls_write: &[u8],
) -> Tls {
    try_upgraded(node, certs, versions, starttls_write).expect("TLS handshake")
}

/// [`upgraded`], with the handshake's failure (another certificate than
/// the one in `certs`) as an error.
fn try_upgraded(
    node: &Node,
    certs: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    starttls_write: &[u8],
) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(node.smtp).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut plain = BufReader::new(tcp.try_clone().unwrap());
    let mut writer = tcp;
    assert_eq!(read_reply(&mut plain).0, 220);
    writer.write_all(b"EHLO client.test\r\n").unwrap();
    let (code, text) = read_reply(&mut plain);
    assert_eq!(code, 250);
    assert!(text.lines().any(|l| l == "STARTTLS"), "{text}");
    writer.write_all(starttls_write).unwrap();
    let (code, text) = read_reply(&mut plain);
    assert_eq!((code, text.as_str()), (220, "2.0.0 Ready to start TLS"));
    assert!(
        plain.buffer().is_empty(),
        "clear text after the 220: {:?}",
        String::from_utf8_lossy(plain.buffer())
    );
    drop(plain);
    let name = ServerName::try_from("mx.antemx.test").unwrap();
    let connection = ClientConnection::new(client_config(certs, versions), name).unwrap();
    let mut stream = StreamOwned::new(connection, writer);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(BufReader::new(stream))
}

fn tls_cmd(tls: &mut Tls, line: &str) -> (u16, String) {
    tls.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .unwrap();
    read_reply(tls)
}

#[test]
fn commands_pipelined_behind_starttls_are_discarded() {
    let sink = Sink::start();
    let (node, certs) = tls_node(&sink);
    // CVE-2011-0411: clear-text commands that follow STARTTLS in the same
    // packet must not be executed inside the TLS session.
    let mut tls = upgraded(
        &node,
        &certs,
        rustls::DEFAULT_VERSIONS,
        b"STARTTLS\r\nNOOP\r\nVRFY injected\r\nMAIL FROM:<injected@attacker.test>\r\nRCPT TO:<bob@example.com>\r\n",
    );
    // The first reply inside TLS answers our EHLO: nothing was queued ahead.
    let (code, text) = tls_cmd(&mut tls, "EHLO client.test");
    assert_eq!(code, 250, "{text}");
    assert!(
        text.starts_with("mx.antemx.test Hello client.test\n"),
        "replies to injected commands came first: {text}"
    );
    assert!(!text.lines().any(|l| l == "STARTTLS"), "{text}");
    // No transaction was smuggled in: RCPT needs a MAIL first.
    let (code, text) = tls_cmd(&mut tls, "RCPT TO:<bob@example.com>");
    assert_eq!(code, 503, "{text}");
    assert_eq!(tls_cmd(&mut tls, "NOOP"), (250, "2.0.0 Ok".to_string()));
    let (code, text) = tls_cmd(&mut tls, "STARTTLS");
    assert_eq!(code, 503, "STARTTLS twice: {text}");
    assert_eq!(tls_cmd(&mut tls, "QUIT").0, 221);
    assert!(node.queue().is_empty());
    assert!(sink.messages().is_empty());
}

#[test]
fn starttls_resets_the_session() {
    let sink = Sink::start();
    let (node, certs) = tls_node(&sink);
    // RFC 3207 §4.2: after the handshake the client must start over with
    // EHLO, and no earlier state survives.
    let mut tls = upgraded(&node, &certs, rustls::DEFAULT_VERSIONS, b"STARTTLS\r\n");
    let (code, text) = tls_cmd(&mut tls, "MAIL FROM:<alice@sender.test>");
    assert_eq!(code, 503, "{text}");
    assert!(text.starts_with("5.5.1 "), "{text}");
    assert_eq!(tls_cmd(&mut tls, "HELO client.test").0, 250);
    assert_eq!(tls_cmd(&mut tls, "MAIL FROM:<alice@sender.test>").0, 250);
    assert_eq!(tls_cmd(&mut tls, "RCPT TO:<bob@example.com>").0, 250);
    assert_eq!(tls_cmd(&mut tls, "DATA").0, 354);
    let id = queue_id(&tls_cmd(&mut tls, "Subject: helo\r\n\r\nx\r\n."));
    assert_eq!(tls_cmd(&mut tls, "QUIT").0, 221);
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    let text = String::from_utf8_lossy(after_verdict(&messages[0].data)).into_owned();
    assert!(
        text.starts_with(&format!(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.antemx.test (antemx) with SMTPS id {id}\r\n\t(version=TLSv1.3 "
        )),
        "{text}"
    );
}

#[test]
fn tls12_clients_are_served_and_recorded() {
    let sink = Sink::start();
    let (node, certs) = tls_node(&sink);
    let mut tls = upgraded(&node, &certs, &[&rustls::version::TLS12], b"STARTTLS\r\n");
    assert_eq!(
        tls.get_ref().conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(tls_cmd(&mut tls, "EHLO client.test").0, 250);
    // Pipelining inside TLS works as in clear text.
    tls.get_mut()
        .write_all(b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut tls).0, 250);
    assert_eq!(read_reply(&mut tls).0, 250);
    assert_eq!(read_reply(&mut tls).0, 354);
    let id = queue_id(&tls_cmd(&mut tls, "Subject: tls12\r\n\r\nx\r\n."));
    assert_eq!(tls_cmd(&mut tls, "QUIT").0, 221);
    // The server closes the TLS session cleanly after QUIT.
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");

    let messages = sink.wait_messages(1, Duration::from_secs(20));
    let text = messages[0].text();
    assert!(
        text.contains(&format!(
            "with ESMTPS id {id}\r\n\t(version=TLSv1.2 cipher=TLS_ECDHE_RSA_WITH_"
        )),
        "{text}"
    );
}

#[test]
fn a_reload_serves_a_renewed_certificate_and_keeps_it_when_the_new_files_are_broken() {
    let sink = Sink::start();
    let (node, certs) = tls_node(&sink);
    let original = temp_dir("original-cert");
    for file in ["cert.pem", "key.pem"] {
        std::fs::copy(certs.join(file), original.join(file)).unwrap();
    }
    let renewed = temp_dir("renewed-cert");
    common::self_signed_cert(&renewed, "mx.antemx.test");
    let serves = |pinned: &Path| {
        try_upgraded(&node, pinned, rustls::DEFAULT_VERSIONS, b"STARTTLS\r\n").is_ok()
    };
    assert!(serves(&original));
    assert!(
        !serves(&renewed),
        "the pinning client must tell certificates apart"
    );

    // A renewal: new files in place, then `systemctl reload antemx`.
    for file in ["cert.pem", "key.pem"] {
        std::fs::copy(renewed.join(file), certs.join(file)).unwrap();
    }
    node.signal("HUP");
    assert!(common::wait_for(Duration::from_secs(10), || node
        .log()
        .contains("config reloaded")));
    assert!(
        serves(&renewed),
        "the renewed certificate is served after the reload"
    );
    assert!(!serves(&original));

    // A broken key: the reload is refused and the renewed certificate stays.
    std::fs::write(certs.join("key.pem"), "not a key\n").unwrap();
    node.signal("HUP");
    assert!(common::wait_for(Duration::from_secs(10), || node
        .log()
        .contains("config not reloaded")));
    assert!(serves(&renewed));
    for dir in [original, renewed] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
