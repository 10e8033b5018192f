//! The checks, one per file. [`standard`] is the set a node runs; the Bayes
//! classifier is added beside them because it needs the node's store and is
//! also trained, not only asked.

pub mod arc;
pub mod attachments;
pub mod auth;
pub mod bayes;
pub mod date_skew;
pub mod dkim;
pub mod dmarc;
pub mod dnsbl;
pub mod from_impersonation;
pub mod gtube;
pub mod helo;
pub mod html_only;
pub mod link_mismatch;
pub mod missing_headers;
pub mod multi_rcpt_bounce;
pub mod own_sender;
pub mod pregreet;
pub mod reverse_dns;
pub mod sender_lists;
pub mod spf;
pub mod uribl;
pub mod user_lists;

use super::Check;
use crate::config::Config;

/// The checks that need nothing but the config and the session's evidence.
pub fn standard(config: &Config) -> Vec<Box<dyn Check>> {
    let mut checks: Vec<Box<dyn Check>> = vec![
        Box::new(helo::HeloCheck::new(
            &config.node.hostname,
            config.domains.keys().cloned(),
        )),
        Box::new(own_sender::OwnSender::new(
            &config.node.hostname,
            config.domains.keys().cloned(),
        )),
        Box::new(multi_rcpt_bounce::MultiRcptBounce),
        Box::new(gtube::Gtube),
        Box::new(missing_headers::MissingHeaders),
        Box::new(date_skew::DateSkew::default()),
        Box::new(from_impersonation::FromImpersonation::new(
            config.domains.keys().cloned(),
        )),
        Box::new(html_only::HtmlOnly),
        Box::new(link_mismatch::LinkMismatch),
        Box::new(sender_lists::SenderLists::new(config)),
        Box::new(pregreet::Pregreet),
        Box::new(dnsbl::Dnsbl),
        Box::new(reverse_dns::ReverseDnsCheck),
        Box::new(uribl::Uribl),
        Box::new(spf::SpfCheck),
        Box::new(dkim::DkimCheck),
        Box::new(arc::ArcCheck),
        Box::new(dmarc::DmarcCheck::new(&config.filter)),
    ];
    if let Some(verdict) = config.filter.attachments {
        checks.push(Box::new(attachments::Attachments::new(
            &config.filter.blocked_extensions,
            verdict,
        )));
    }
    checks
}
