//! The filter: a pipeline of checks that judge a message during the SMTP
//! session, each at the stage where its evidence appears (connect, HELO,
//! MAIL, RCPT, end of DATA), so that a verdict is known before the reply to
//! DATA and junk is refused or sidelined without ever bouncing to a forged
//! sender.
//!
//! A check is a [`Check`]: every hook has a default that contributes nothing,
//! so a check implements only the stages it has evidence for. A contribution
//! is a [`Hit`]: a rule name, a score and a one-line reason, so that every
//! verdict can be explained to the customer who sees it. The pipeline sums
//! the hits and decides by the [`Thresholds`] of `[filter]`.
//!
//! Network checks (DNSBL, SPF, DKIM, ...) are meant to fit the same hooks
//! without making them async: all lookups of a stage run concurrently under
//! one deadline *before* the hooks are called, and their answers reach the
//! checks inside the stage's evidence ([`Connect`], [`Mail`], ...), as one more
//! field. A lookup that failed is an absent answer, and the check contributes
//! nothing. That keeps checks pure functions of their evidence, testable
//! without a resolver, and one slow DNS server cannot hold a stage beyond its
//! deadline.

pub mod archive;
pub mod checks;
pub mod content;
pub mod lookups;
pub mod stamp;
pub mod user_lists;

pub use content::Content;
pub use lookups::Lookups;

use std::net::IpAddr;

/// One score contribution of one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Rule name, upper case with underscores (`BAYES_SPAM`), stable: operators
    /// grep for it and customers see it.
    pub rule: &'static str,
    /// Positive: evidence of spam; negative: evidence of wanted mail.
    pub score: f64,
    /// One line saying what was seen, for the customer and the operator.
    pub reason: String,
    /// A verdict the rule imposes whatever the sum says.
    pub force: Option<Force>,
}

/// What an operator's list or policy imposes on the verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Force {
    /// An allow list: accept whatever the score, unless a rule forces
    /// [`Force::AtLeast`] (a test string or a blocked attachment is never
    /// let through because of who sent it).
    Allow,
    /// At least this verdict, whatever the score.
    AtLeast(Verdict),
}

impl Hit {
    pub fn new(rule: &'static str, score: f64, reason: impl Into<String>) -> Hit {
        Hit {
            rule,
            score,
            reason: reason.into(),
            force: None,
        }
    }

    pub fn forcing(force: Force, rule: &'static str, score: f64, reason: impl Into<String>) -> Hit {
        Hit {
            force: Some(force),
            ..Hit::new(rule, score, reason)
        }
    }
}

/// What happens to a message, from mildest to strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Below `sideline_at`: into the delivery queue.
    Accept,
    /// From `sideline_at`: kept in the sideline store for the customer.
    Sideline,
    /// From `reject_at`: 550 5.7.1 at the end of DATA, nothing stored.
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Sideline => "sideline",
            Verdict::Reject => "reject",
        }
    }
}

/// Highest allowed threshold: far below the GTUBE score (1000).
const MAX_THRESHOLD: f64 = 100.0;

// GTUBE stays above any reject line even with the strongest ham evidence;
// checked when compiling.
const _: () = assert!(checks::gtube::SCORE - checks::bayes::HAM_MAX > MAX_THRESHOLD);

/// The two score lines of `[filter]`. Only [`Thresholds::new`] makes one, so a
/// value of this type is always usable: finite, positive, and
/// `sideline_at <= reject_at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    sideline_at: f64,
    reject_at: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            sideline_at: 5.0,
            reject_at: 15.0,
        }
    }
}

impl Thresholds {
    pub fn new(sideline_at: f64, reject_at: f64) -> Result<Thresholds, String> {
        if !sideline_at.is_finite() || !reject_at.is_finite() {
            return Err("sideline_at and reject_at must be numbers".into());
        }
        // A threshold at or below zero would sideline mail that no rule
        // found anything wrong with.
        if sideline_at <= 0.0 {
            return Err(format!("sideline_at = {sideline_at} must be above 0"));
        }
        // GTUBE must always land above reject_at, whatever else a message
        // carries; and a line above any real score is a typo.
        if reject_at > MAX_THRESHOLD {
            return Err(format!(
                "reject_at = {reject_at} is above {MAX_THRESHOLD}, more than any message scores"
            ));
        }
        if reject_at < sideline_at {
            return Err(format!(
                "reject_at = {reject_at} is below sideline_at = {sideline_at}"
            ));
        }
        Ok(Thresholds {
            sideline_at,
            reject_at,
        })
    }

    pub fn sideline_at(&self) -> f64 {
        self.sideline_at
    }

    pub fn reject_at(&self) -> f64 {
        self.reject_at
    }

    /// The stricter of two: each line at the lower of the two.
    pub fn strictest(self, other: Thresholds) -> Thresholds {
        Thresholds {
            sideline_at: self.sideline_at.min(other.sideline_at),
            reject_at: self.reject_at.min(other.reject_at),
        }
    }

    pub fn verdict(&self, score: f64) -> Verdict {
        if score >= self.reject_at {
            Verdict::Reject
        } else if score >= self.sideline_at {
            Verdict::Sideline
        } else {
            Verdict::Accept
        }
    }
}

// The evidence of each stage is built by [`Session`] and [`Transaction`]
// from what the SMTP session saw, never by a check or a caller: a check at
// RCPT always sees the right sender and the right count of recipients before.

/// Evidence at connect time.
#[derive(Debug, Clone)]
pub struct Connect {
    /// The client's address; `None` when the message did not come over SMTP
    /// (`antemx scan` of a file), and then address checks contribute nothing.
    pub client: Option<IpAddr>,
    /// The client talked before the banner (`[smtp] greet_pause`).
    pub pregreet: bool,
}

/// Evidence at HELO/EHLO.
#[derive(Debug, Clone)]
pub struct Helo<'a> {
    pub client: Option<IpAddr>,
    /// The name the client gave, as given.
    pub name: &'a str,
}

/// Evidence at MAIL FROM.
#[derive(Debug, Clone)]
pub struct Mail<'a> {
    pub client: Option<IpAddr>,
    /// The envelope sender; `None` for the null sender `<>` (bounces), which
    /// must never be refused for being null.
    pub sender: Option<&'a str>,
}

/// Evidence at RCPT TO: one recipient the relay policy accepted.
#[derive(Debug, Clone)]
pub struct Rcpt<'a> {
    pub sender: Option<&'a str>,
    pub recipient: &'a str,
    /// Recipients of this message accepted before this one.
    pub before: usize,
}

/// What is known of a message's SMTP envelope when it is judged outside a
/// session; each unknown part is simply not judged.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub client: Option<IpAddr>,
    pub pregreet: bool,
    pub helo: Option<String>,
    /// `None`: the null sender `<>`, or unknown.
    pub sender: Option<String>,
    pub recipients: Vec<String>,
}

/// A check: one kind of evidence, judged at the stages where it appears. Each
/// hook returns its contributions; an empty `Vec` does not allocate.
pub trait Check: Send + Sync {
    fn connect(&self, _connect: &Connect) -> Vec<Hit> {
        Vec::new()
    }

    fn helo(&self, _helo: &Helo) -> Vec<Hit> {
        Vec::new()
    }

    fn mail(&self, _mail: &Mail) -> Vec<Hit> {
        Vec::new()
    }

    fn rcpt(&self, _rcpt: &Rcpt) -> Vec<Hit> {
        Vec::new()
    }

    /// End of DATA: the whole message, parsed once for all checks.
    fn data(&self, _content: &Content) -> Vec<Hit> {
        Vec::new()
    }

    /// End of DATA: what the DNS said (see [`lookups`]).
    fn lookups(&self, _lookups: &Lookups) -> Vec<Hit> {
        Vec::new()
    }

    /// End of DATA: the whole envelope, for evidence about all recipients
    /// at once.
    fn envelope(&self, _sender: Option<&str>, _recipients: &[String]) -> Vec<Hit> {
        Vec::new()
    }
}

/// A check shared with its owner, as the Bayes classifier is with whoever
/// trains it.
impl<C: Check + ?Sized> Check for std::sync::Arc<C> {
    fn connect(&self, connect: &Connect) -> Vec<Hit> {
        (**self).connect(connect)
    }
    fn helo(&self, helo: &Helo) -> Vec<Hit> {
        (**self).helo(helo)
    }
    fn mail(&self, mail: &Mail) -> Vec<Hit> {
        (**self).mail(mail)
    }
    fn rcpt(&self, rcpt: &Rcpt) -> Vec<Hit> {
        (**self).rcpt(rcpt)
    }
    fn data(&self, content: &Content) -> Vec<Hit> {
        (**self).data(content)
    }
    fn lookups(&self, lookups: &Lookups) -> Vec<Hit> {
        (**self).lookups(lookups)
    }
    fn envelope(&self, sender: Option<&str>, recipients: &[String]) -> Vec<Hit> {
        (**self).envelope(sender, recipients)
    }
}

/// The checks of a node and the thresholds they are judged by.
pub struct Pipeline {
    checks: Vec<Box<dyn Check>>,
    thresholds: Thresholds,
    /// Customer domains with thresholds of their own, by lower-case name.
    domain_thresholds: std::collections::BTreeMap<String, Thresholds>,
}

impl Pipeline {
    pub fn new(checks: Vec<Box<dyn Check>>, thresholds: Thresholds) -> Pipeline {
        Pipeline {
            checks,
            thresholds,
            domain_thresholds: Default::default(),
        }
    }

    /// The thresholds that apply to one recipient.
    fn thresholds_for(&self, recipient: &str) -> Thresholds {
        let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
        self.domain_thresholds
            .get(&crate::config::normalize_domain(domain))
            .copied()
            .unwrap_or(self.thresholds)
    }

    /// The node's checks, judged by the config's thresholds, and the
    /// classifier when the node has one.
    pub fn standard(
        config: &crate::config::Config,
        bayes: Option<std::sync::Arc<checks::bayes::Bayes>>,
    ) -> Pipeline {
        let mut all = checks::standard(config);
        if let Some(bayes) = bayes {
            all.push(Box::new(bayes));
        }
        Pipeline {
            domain_thresholds: config
                .domains
                .iter()
                .filter_map(|(name, d)| Some((name.clone(), d.thresholds?)))
                .collect(),
            ..Pipeline::new(all, config.filter.thresholds)
        }
    }

    /// Adds the recipients' own allow and block lists.
    pub fn with_user_lists(mut self, lists: user_lists::UserLists) -> Pipeline {
        self.checks
            .push(Box::new(checks::user_lists::UserListCheck::new(lists)));
        self
    }

    /// Judges a whole message at once, with whatever envelope is known about
    /// it and what the DNS said.
    pub fn judge(&self, envelope: &Envelope, content: &Content, lookups: &Lookups) -> Decision {
        let mut session = self.connect(Connect {
            client: envelope.client,
            pregreet: envelope.pregreet,
        });
        if let Some(name) = &envelope.helo {
            session.helo(name);
        }
        let mut transaction = session.mail(envelope.sender.as_deref());
        for recipient in &envelope.recipients {
            transaction.rcpt(recipient);
        }
        transaction.data(content, lookups)
    }

    /// A new SMTP connection: runs the connect stage.
    pub fn connect(&self, connect: Connect) -> Session<'_> {
        let mut hits = Vec::new();
        for check in &self.checks {
            hits.extend(check.connect(&connect));
        }
        Session {
            pipeline: self,
            client: connect.client,
            hits,
        }
    }
}

/// The evidence of one connection. Connect and HELO evidence holds for every
/// message of the connection; each message is a [`Transaction`] that starts
/// from it, so RSET or a second message cannot inherit a first message's
/// MAIL, RCPT or content hits.
pub struct Session<'p> {
    pipeline: &'p Pipeline,
    client: Option<IpAddr>,
    hits: Vec<Hit>,
}

impl<'p> Session<'p> {
    /// HELO or EHLO. Clients say EHLO again after STARTTLS, with the same
    /// name: a hit already present is not counted twice.
    pub fn helo(&mut self, name: &str) {
        let helo = Helo {
            client: self.client,
            name,
        };
        for check in &self.pipeline.checks {
            for hit in check.helo(&helo) {
                if !self.hits.contains(&hit) {
                    self.hits.push(hit);
                }
            }
        }
    }

    /// MAIL FROM: starts a message. `None` is the null sender `<>`.
    pub fn mail<'m>(&self, sender: Option<&'m str>) -> Transaction<'p, 'm> {
        let mut hits = self.hits.clone();
        let mail = Mail {
            client: self.client,
            sender,
        };
        for check in &self.pipeline.checks {
            hits.extend(check.mail(&mail));
        }
        Transaction {
            pipeline: self.pipeline,
            sender,
            recipients: Vec::new(),
            hits,
            thresholds: None,
        }
    }
}

/// One message being received, from MAIL FROM to the end of DATA. The only
/// way to a [`Decision`] is [`Transaction::data`], which consumes it: a
/// message cannot be judged before its content was seen, nor twice.
pub struct Transaction<'p, 'm> {
    pipeline: &'p Pipeline,
    sender: Option<&'m str>,
    recipients: Vec<String>,
    hits: Vec<Hit>,
    /// The strictest thresholds of the recipients so far: one message is
    /// one verdict, and no recipient gets less protection than it asked for.
    thresholds: Option<Thresholds>,
}

impl Transaction<'_, '_> {
    /// A recipient the relay policy accepted.
    pub fn rcpt(&mut self, recipient: &str) {
        let rcpt = Rcpt {
            sender: self.sender,
            recipient,
            before: self.recipients.len(),
        };
        for check in &self.pipeline.checks {
            self.hits.extend(check.rcpt(&rcpt));
        }
        self.recipients.push(recipient.to_string());
        let mine = self.pipeline.thresholds_for(recipient);
        self.thresholds = Some(self.thresholds.map_or(mine, |t| t.strictest(mine)));
    }

    /// End of DATA: runs the content and network checks and decides.
    pub fn data(mut self, content: &Content, lookups: &Lookups) -> Decision {
        for check in &self.pipeline.checks {
            self.hits.extend(check.data(content));
            self.hits.extend(check.lookups(lookups));
            self.hits
                .extend(check.envelope(self.sender, &self.recipients));
        }
        let thresholds = self.thresholds.unwrap_or(self.pipeline.thresholds);
        Decision::new(self.hits, thresholds)
    }
}

/// The outcome for one message: every hit, their sum and the verdict the sum
/// gives. Built only from hits and thresholds, so score and verdict always
/// agree.
#[derive(Debug, Clone)]
pub struct Decision {
    hits: Vec<Hit>,
    score: f64,
    verdict: Verdict,
    thresholds: Thresholds,
}

impl Decision {
    fn new(hits: Vec<Hit>, thresholds: Thresholds) -> Decision {
        // Adding 0.0 turns the -0.0 that an empty f64 sum gives into 0.0,
        // which customers would otherwise read in the headers.
        let score = hits.iter().map(|h| h.score).sum::<f64>() + 0.0;
        let mut verdict = thresholds.verdict(score);
        if hits.iter().any(|h| h.force == Some(Force::Allow)) {
            verdict = Verdict::Accept;
        }
        for hit in &hits {
            if let Some(Force::AtLeast(floor)) = hit.force {
                verdict = verdict.max(floor);
            }
        }
        Decision {
            verdict,
            hits,
            score,
            thresholds,
        }
    }

    /// The thresholds the message was judged by (its recipients' domains').
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    pub fn hits(&self) -> &[Hit] {
        &self.hits
    }

    pub fn score(&self) -> f64 {
        self.score
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        stage: &'static str,
        score: f64,
    }

    impl Check for Fixed {
        fn connect(&self, _: &Connect) -> Vec<Hit> {
            self.at("connect")
        }
        fn helo(&self, _: &Helo) -> Vec<Hit> {
            self.at("helo")
        }
        fn mail(&self, _: &Mail) -> Vec<Hit> {
            self.at("mail")
        }
        fn rcpt(&self, _: &Rcpt) -> Vec<Hit> {
            self.at("rcpt")
        }
        fn data(&self, _: &Content) -> Vec<Hit> {
            self.at("data")
        }
    }

    impl Fixed {
        fn at(&self, stage: &'static str) -> Vec<Hit> {
            if stage == self.stage {
                vec![Hit::new("FIXED", self.score, stage)]
            } else {
                Vec::new()
            }
        }
    }

    fn judge(checks: Vec<Box<dyn Check>>) -> Decision {
        let pipeline = Pipeline::new(checks, Thresholds::default());
        let mut session = pipeline.connect(Connect {
            client: None,
            pregreet: false,
        });
        session.helo("client.test");
        let mut tx = session.mail(Some("a@b.test"));
        tx.rcpt("c@d.test");
        let raw = b"Subject: x\r\n\r\nbody\r\n";
        tx.data(&Content::parse(raw), &Lookups::default())
    }

    #[test]
    fn thresholds_decide() {
        let t = Thresholds::default();
        assert_eq!(t.verdict(4.99), Verdict::Accept);
        assert_eq!(t.verdict(5.0), Verdict::Sideline);
        assert_eq!(t.verdict(14.9), Verdict::Sideline);
        assert_eq!(t.verdict(15.0), Verdict::Reject);
        assert_eq!(t.verdict(-3.0), Verdict::Accept);
    }

    #[test]
    fn thresholds_refuse_nonsense() {
        assert!(Thresholds::new(5.0, 4.0).is_err());
        assert!(Thresholds::new(0.0, 4.0).is_err());
        assert!(Thresholds::new(f64::NAN, 4.0).is_err());
        assert!(Thresholds::new(5.0, f64::INFINITY).is_err());
        assert!(Thresholds::new(5.0, 500.0).is_err());
        assert!(Thresholds::new(5.0, 5.0).is_ok());
    }

    #[test]
    fn every_stage_contributes_and_sums() {
        let stages = ["connect", "helo", "mail", "rcpt", "data"];
        let checks: Vec<Box<dyn Check>> = stages
            .iter()
            .map(|&stage| Box::new(Fixed { stage, score: 3.0 }) as Box<dyn Check>)
            .collect();
        let decision = judge(checks);
        assert_eq!(decision.hits().len(), 5);
        assert_eq!(decision.score(), 15.0);
        assert_eq!(decision.verdict(), Verdict::Reject);
        let reasons: Vec<&str> = decision.hits().iter().map(|h| h.reason.as_str()).collect();
        assert_eq!(reasons, stages);
    }

    #[test]
    fn negative_evidence_lowers_the_score() {
        let decision = judge(vec![
            Box::new(Fixed {
                stage: "data",
                score: 6.0,
            }),
            Box::new(Fixed {
                stage: "connect",
                score: -2.0,
            }),
        ]);
        assert_eq!(decision.score(), 4.0);
        assert_eq!(decision.verdict(), Verdict::Accept);
    }

    #[test]
    fn a_second_message_starts_from_the_connection_evidence() {
        let pipeline = Pipeline::new(
            vec![
                Box::new(Fixed {
                    stage: "connect",
                    score: 1.0,
                }),
                Box::new(Fixed {
                    stage: "rcpt",
                    score: 2.0,
                }),
            ],
            Thresholds::default(),
        );
        let session = pipeline.connect(Connect {
            client: None,
            pregreet: false,
        });
        let mut first = session.mail(None);
        first.rcpt("a@b");
        first.rcpt("c@b");
        let content = Content::parse(b"\r\n");
        let none = Lookups::default();
        assert_eq!(first.data(&content, &none).score(), 5.0);
        let second = session.mail(None);
        assert_eq!(second.data(&content, &none).score(), 1.0);
    }
}
