//! The EHLO and HELO replies.

/// The EHLO reply: what this server supports.
pub fn ehlo_reply(
    hostname: &str,
    client_name: &str,
    max_size: u64,
    offer_starttls: bool,
) -> String {
    let mut lines = vec![
        format!("{hostname} Hello {client_name}"),
        "PIPELINING".to_string(),
        format!("SIZE {max_size}"),
        "8BITMIME".to_string(),
        "SMTPUTF8".to_string(),
        "ENHANCEDSTATUSCODES".to_string(),
    ];
    if offer_starttls {
        lines.push("STARTTLS".to_string());
    }
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| format!("250{}{line}\r\n", if i == last { ' ' } else { '-' }))
        .collect()
}

/// A HELO/EHLO argument we can repeat in a Received header without letting
/// the client inject text: printable ASCII without spaces or parentheses.
pub fn sanitize_helo(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '(' | ')' | ';' | '\\'))
        .take(255)
        .collect();
    if clean.is_empty() {
        "unknown".to_string()
    } else {
        clean
    }
}
